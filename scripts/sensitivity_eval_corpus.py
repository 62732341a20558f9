"""Evaluation corpus for the sensitivity detector, kept apart from the tuning corpus.

    from sensitivity_eval_corpus import generate_eval_corpus
    cases = generate_eval_corpus(seed=90210)   # [{"texts": [...], "classes": [...]}, ...]

`scripts/sensitivity_corpus.py` is the corpus the rules were tuned on. This one is built by a
different generator (its own templates, value builders and encodings, a different seed and
other locales: Japan, Brazil, Australia, India, Sweden, Czechia, Mexico, Canada, Austria,
Denmark, Finland, Portugal, Hungary, Romania, Turkey) so its score says how the rules do on
text they were not fitted to. Every value is planted in one of the encodings a client may use
(NBSP and narrow spaces, dots and slashes between digit groups, zero-width characters,
full-width forms, lowercase, percent/HTML/JSON escapes, base64, spelled-out emails) and some are
split across two messages (`texts` holds one string per message).

Ground truth comes from the generator: cards are built Luhn-valid over the networks' IIN
ranges, IBANs carry computed mod-97 check digits, phone numbers are Faker's numbers for the
locale kept when libphonenumber calls them possible, SSNs are drawn from the issued ranges.
Harmless cases are this corpus's own look-alikes: barcodes, tracking and invoice numbers,
amounts with narrow-space grouping, coordinates, postal codes, times, versions, hashes.
"""

from __future__ import annotations

import base64
import html
import json
import random
import string
import sys
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

import phonenumbers
from faker import Faker
from stdnum import ean, iban, luhn


class EvalCase(TypedDict):
    texts: list[str]
    classes: list[str]


DEFAULT_EVAL_SEED = 90210
LOCALES = {"ja_JP": "JP", "pt_BR": "BR", "en_AU": "AU", "en_IN": "IN", "sv_SE": "SE",
           "cs_CZ": "CZ", "es_MX": "MX", "en_CA": "CA", "de_AT": "AT", "da_DK": "DK",
           "fi_FI": "FI", "pt_PT": "PT", "hu_HU": "HU", "ro_RO": "RO", "tr_TR": "TR"}
ZW = "\u200b"


class _Maker:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.fake = Faker(list(LOCALES))
        self.fake.seed_instance(seed)
        self.prose = Faker("en_AU")
        self.prose.seed_instance(seed + 1)

    def num(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def filler(self) -> str:
        return self.prose.sentence(nb_words=self.r.randint(4, 12))

    def around(self, core: str) -> str:
        parts = [core]
        if self.r.random() < 0.7:
            parts.insert(0, self.filler())
        if self.r.random() < 0.7:
            parts.append(self.filler())
        return " ".join(parts)


# ---------------------------------------------------------------- digit encodings

def _group(digits: str, size: int, sep: str) -> str:
    return sep.join(digits[i : i + size] for i in range(0, len(digits), size))


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _digit_form(m: _Maker, digits: str, size: int = 4) -> str:
    style = m.r.choice(["plain", "space", "nbsp", "nnbsp", "dot", "slash", "double", "zw",
                        "fullwidth", "thin", "dash"])
    seps = {"plain": "", "space": " ", "nbsp": "\u00a0", "nnbsp": "\u202f", "dot": ".",
            "slash": "/", "double": "  ", "zw": ZW, "thin": "\u2009", "dash": "\u2011"}
    if style == "fullwidth":
        return _fullwidth(_group(digits, size, " "))
    return _group(digits, size, seps[style])


# ---------------------------------------------------------------- cards

_IINS = [("1800", 15), ("2131", 15), ("3528", 16), ("3589", 19), ("4", 13), ("4", 16),
         ("4", 19), ("51", 16), ("2720", 16), ("2200", 16), ("34", 15), ("37", 15),
         ("36", 14), ("6011", 16), ("65", 19), ("62", 17), ("5018", 12), ("6759", 19),
         ("508", 16), ("81", 16), ("9792", 16), ("5019", 16), ("506099", 19), ("1", 15)]
_CARD_LINES = ["Kortnummer: {x}", "cartão {x} venc. 11/29", "Kreditkarte {x} bitte belasten",
               "card on file → {x}", "pay with {x}", "{x} is the card they used",
               "numero de tarjeta {x}", "kart numaras\u0131 {x}"]


def _card(m: _Maker) -> str:
    prefix, length = m.r.choice(_IINS)
    body = prefix + m.num(length - len(prefix) - 1)
    return body + luhn.calc_check_digit(body)


def cards(m: _Maker, n: int) -> list[EvalCase]:
    return [{"texts": [m.around(m.r.choice(_CARD_LINES).format(x=_digit_form(m, _card(m))))],
             "classes": ["payment_card"]} for _ in range(n)]


# ---------------------------------------------------------------- IBAN

_BBAN_DIGITS = {"NO": 11, "BE": 12, "DK": 14, "FI": 14, "AT": 16, "CZ": 20, "SE": 20,
                "PT": 21, "HU": 24, "PL": 24, "SK": 20, "LT": 16, "EE": 16, "SI": 15}
_IBAN_LINES = ["IBAN {x}", "Überweisung an {x}", "conta {x}", "tilinumero {x}",
               "kontonummer {x}", "bank: {x} (BIC not needed)"]


def _iban(m: _Maker) -> str:
    while True:
        country = m.r.choice(sorted(_BBAN_DIGITS))
        bban = m.num(_BBAN_DIGITS[country])
        number = country + iban.calc_check_digits(country + "00" + bban) + bban
        if iban.is_valid(number):
            return number


def ibans(m: _Maker, n: int) -> list[EvalCase]:
    out: list[EvalCase] = []
    for _ in range(n):
        number = _iban(m)
        style = m.r.choice(["compact", "groups", "lower", "nbsp", "lowergroups"])
        x = {"compact": number, "groups": _group(number, 4, " "), "lower": number.lower(),
             "nbsp": _group(number, 4, "\u00a0"),
             "lowergroups": _group(number.lower(), 4, " ")}[style]
        out.append({"texts": [m.around(m.r.choice(_IBAN_LINES).format(x=x))],
                    "classes": ["iban"]})
    return out


# ---------------------------------------------------------------- SSN

_SSN_LINES = ["SSN: {x}", "social security number {x}", "Soc. Sec. {x}",
              "employee ssn={x}", "SS# {x} on the W-4", "Her Social Security no. is {x}"]


def ssns(m: _Maker, n: int) -> list[EvalCase]:
    out: list[EvalCase] = []
    for _ in range(n):
        area = m.r.choice([a for a in range(1, 900) if a != 666])
        group, serial = m.r.randint(1, 99), m.r.randint(1, 9999)
        sep = m.r.choice(["-", " ", "", ".", "\u00a0"])
        x = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
        out.append({"texts": [m.around(m.r.choice(_SSN_LINES).format(x=x))],
                    "classes": ["us_ssn"]})
    return out


# ---------------------------------------------------------------- phones

_PHONE_LINES = ["Telefon: {x}", "ring me on {x}", "WhatsApp {x}", "celular {x}",
                "tel. {x}", "puhelin {x}", "mobile: {x}", "call {x} after 6pm",
                "my number {x}", "Phone {x} (office)"]


def _phone(m: _Maker) -> tuple[str, str]:
    while True:
        locale = m.r.choice(sorted(LOCALES))
        x = str(m.fake[locale].phone_number())
        try:
            parsed = phonenumbers.parse(x, LOCALES[locale])
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            return x, LOCALES[locale]


def phones(m: _Maker, n: int) -> list[EvalCase]:
    out: list[EvalCase] = []
    for i in range(n):
        x, region = _phone(m)
        if i % 5 == 0:  # no phone word: the number as libphonenumber formats it
            parsed = phonenumbers.parse(x, region)
            x = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
            core = f"{m.fake.name()}, {x}"
        else:
            if m.r.random() < 0.3:
                x = x.replace(" ", "\u00a0")
            core = m.r.choice(_PHONE_LINES).format(x=x)
        out.append({"texts": [m.around(core)], "classes": ["phone"]})
    return out


# ---------------------------------------------------------------- email

def _email_form(m: _Maker, address: str) -> str:
    local, domain = address.split("@")
    style = m.r.choice(["plain", "pct", "entity", "fullwidth", "jsonesc", "zw", "b64",
                        "spelled", "bracket", "upper"])
    if style == "pct":
        return quote(address, safe="")
    if style == "entity":
        return html.escape(local) + "&#64;" + domain
    if style == "fullwidth":
        return local + "\uff20" + domain
    if style == "jsonesc":
        return json.dumps({"to": address}).replace("@", "\\u0040")
    if style == "zw":
        return local + "@" + domain.replace(".", ZW + ".", 1)
    if style == "b64":
        return base64.b64encode(address.encode()).decode()
    if style == "spelled":
        return local.replace(".", " dot ") + " at " + domain.replace(".", " dot ")
    if style == "bracket":
        return local + " [at] " + domain.replace(".", " [dot] ")
    if style == "upper":
        return address.upper()
    return address


_EMAIL_LINES = ["mail: {x}", "メール {x}", "escreva para {x}", "kirjoita {x}",
                "{x} on the invoice", "contact {x}"]


def emails(m: _Maker, n: int) -> list[EvalCase]:
    out: list[EvalCase] = []
    for _ in range(n):
        x = _email_form(m, m.fake.email())
        out.append({"texts": [m.around(m.r.choice(_EMAIL_LINES).format(x=x))],
                    "classes": ["email"]})
    return out


# ---------------------------------------------------------------- secrets

def _token(m: _Maker, alphabet: str, n: int) -> str:
    return "".join(m.r.choice(alphabet) for _ in range(n))


def secrets(m: _Maker, n: int) -> list[EvalCase]:
    alnum = string.ascii_letters + string.digits
    upper = string.ascii_uppercase + string.digits
    makers = [
        lambda: "AKIA" + _token(m, upper, 16),
        lambda: "ghp_" + _token(m, alnum, 36),
        lambda: "sk-proj-" + _token(m, alnum, 40) + "7",
        lambda: "xoxb-" + m.num(12) + "-" + _token(m, alnum, 24),
        lambda: "eyJhbGciOiJIUzI1NiJ9." + _token(m, alnum, 30) + "." + _token(m, alnum, 20),
        lambda: f"mysql://admin:{_token(m, alnum, 12)}@db.internal:3306/app",
        lambda: "-----BEGIN OPENSSH PRIVATE KEY-----",
    ]
    lines = ["export TOKEN={x}", "Authorization: Bearer {x}", "config: {x}", "use {x} to log in"]
    return [{"texts": [m.around(m.r.choice(lines).format(x=makers[i % len(makers)]()))],
             "classes": ["secret"]} for i in range(n)]


# ---------------------------------------------------------------- split across messages

def splits(m: _Maker, n: int) -> list[EvalCase]:
    out: list[EvalCase] = []
    for i in range(n):
        if i % 2:
            value, cls = _group(_card(m), 4, " "), "payment_card"
        else:
            value, cls = m.fake.email(), "email"
        cut = m.r.randint(3, len(value) - 3)
        out.append({"texts": [m.filler() + " " + value[:cut], value[cut:] + " " + m.filler()],
                    "classes": [cls]})
    return out


# ---------------------------------------------------------------- harmless look-alikes

def _ean13(m: _Maker) -> str:
    body = m.r.choice(["40", "50", "87", "54"]) + m.num(10)
    return body + ean.calc_check_digit(body)


def _harmless(m: _Maker) -> str:
    choices = [
        lambda: f"barcode EAN {_ean13(m)}",
        lambda: f"tracking 1Z{_token(m, string.ascii_uppercase + string.digits, 16)}",
        lambda: f"USPS {_group(m.num(22), 4, ' ')}",
        lambda: f"total 1\u202f{m.num(3)}\u202f{m.num(3)},{m.num(2)} kr",
        lambda: f"at {m.r.uniform(-90, 90):.6f}, {m.r.uniform(-180, 180):.6f}",
        lambda: f"postcode {m.num(3)} {m.num(2)} / ZIP {m.num(5)}-{m.num(4)}",
        lambda: f"open {m.r.randint(6, 11):02d}:{m.r.choice(['00', '30'])}\u2013"
                f"{m.r.randint(16, 22)}:00, room {m.num(4)}",
        lambda: f"release {m.r.randint(1, 20)}.{m.r.randint(0, 99)}.{m.r.randint(0, 999)}"
                f" build {m.num(8)}",
        lambda: f"invoice {m.r.randint(2019, 2025)}-{m.num(6)} due {m.r.randint(1, 28)}."
                f"{m.r.randint(1, 12)}.{m.r.randint(2024, 2026)}",
        lambda: f"sha1 {_token(m, '0123456789abcdef', 40)}",
        lambda: f"population {m.r.randint(1, 999)},{m.num(3)},{m.num(3)} in {m.num(4)}",
        lambda: f"score {m.r.randint(0, 9)}-{m.r.randint(0, 9)} after {m.r.randint(50, 120)}'",
        lambda: f"ABN {m.num(2)} {m.num(3)} {m.num(3)} {m.num(3)}",
        lambda: f"{m.r.randint(1, 999)} at home dot matrix printer, look at example.com",
        lambda: f"serial {m.num(4)}-{m.num(4)}-{m.num(4)}",
        lambda: f"the ratio 1:{m.num(7)} and epoch {m.r.randint(1_600_000_000, 1_800_000_000)}",
        lambda: f"part no. {m.num(3)}.{m.num(3)}.{m.num(3)}",
        lambda: f"order {m.num(10)} shipped",
        lambda: m.prose.paragraph(nb_sentences=3),
    ]
    return m.r.choice(choices)()


def harmless(m: _Maker, n: int) -> list[EvalCase]:
    return [{"texts": [m.around(_harmless(m))], "classes": []} for _ in range(n)]


# ---------------------------------------------------------------- the corpus

def generate_eval_corpus(scale: float = 1.0, seed: int = DEFAULT_EVAL_SEED) -> list[EvalCase]:
    m = _Maker(seed)
    counts = [(cards, 120), (ibans, 80), (ssns, 80), (phones, 160), (emails, 120),
              (secrets, 60), (splits, 40), (harmless, 600)]
    cases: list[EvalCase] = []
    for build, count in counts:
        cases.extend(build(m, max(1, round(count * scale))))
    m.r.shuffle(cases)
    return cases


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else None
    lines = [json.dumps(c, ensure_ascii=False) for c in generate_eval_corpus()]
    if out is None:
        print("\n".join(lines))
    else:
        out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
