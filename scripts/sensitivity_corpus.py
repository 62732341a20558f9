"""Deterministic labelled corpus for the sensitivity detector.

    from sensitivity_corpus import generate_corpus
    cases = generate_corpus(scale=1.0, seed=1234)   # [{"text": ..., "classes": [...]}, ...]

Positives embed one (sometimes two) entities of each class in realistic sentences; hard
negatives are the look-alikes a detector must not flag: order numbers, ISBNs, UUIDs,
timestamps, IPs, versions, prices, Luhn-failing 16-digit numbers, unformatted 9-digit
numbers, invalid SSNs and IBANs, hashes, near-miss secrets and plain prose.

Ground truth comes from the generator, never from the detector: cards are built Luhn-valid
(or deliberately broken), IBANs come from Faker's bank providers and are kept only when
mod-97 holds, phone numbers are kept only when libphonenumber calls them valid.

Run as a script to write the corpus as JSON lines: `python scripts/sensitivity_corpus.py OUT`.
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import phonenumbers
from faker import Faker
from stdnum import ean, iban, luhn


class Case(TypedDict):
    text: str
    classes: list[str]


DEFAULT_SEED = 1234
# Fixed bounds: Faker's relative dates ("-3y") would change the corpus every second.
_EPOCH_FROM = datetime(2021, 1, 1, tzinfo=UTC)
_EPOCH_TO = datetime(2025, 12, 31, tzinfo=UTC)
ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
B64URL = ALNUM + "-_"


class _Gen:
    """Random values and sentences from one seeded Faker and one seeded Random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        locales = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL"]
        self.fake = Faker(locales)
        self.fake.seed_instance(seed)
        self.en = self.fake["en_US"]

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def digits(self, n: int) -> str:
        return self.chars(string.digits, n)

    def embed(self, templates: list[str], **values: str) -> str:
        """A template filled in, between filler sentences (sometimes none)."""
        core = self.rng.choice(templates).format(**values)
        before = self.en.sentence() + " " if self.rng.random() < 0.6 else ""
        after = " " + self.en.sentence() if self.rng.random() < 0.6 else ""
        return before + core + after


# ---------------------------------------------------------------- payment cards

# (network, prefix chooser, lengths, grouping for the "network" format)
_NETWORKS: list[tuple[str, Callable[[random.Random], str], tuple[int, ...]]] = [
    ("visa", lambda r: "4", (16, 16, 13, 19)),
    ("mastercard", lambda r: str(r.randint(51, 55)), (16,)),
    ("mastercard2", lambda r: str(r.randint(2221, 2720)), (16,)),
    ("amex", lambda r: r.choice(["34", "37"]), (15,)),
    ("diners", lambda r: r.choice(["300", "301", "305", "36", "38"]), (14,)),
    ("discover", lambda r: r.choice(["6011", "644", "649", "65"]), (16, 19)),
    ("jcb", lambda r: str(r.randint(3528, 3589)), (16, 19)),
    (
        "maestro",
        lambda r: r.choice(["5018", "5020", "5038", "6304", "6759", "6761"]),
        (12, 13, 15, 16, 18, 19),
    ),
    ("unionpay", lambda r: "62" + str(r.randint(1, 9)), (16, 17, 18, 19)),
    ("mir", lambda r: str(r.randint(2200, 2204)), (16,)),
]


def _card_number(g: _Gen, prefix: str, length: int, valid: bool = True) -> str:
    body = prefix + g.digits(length - len(prefix) - 1)
    check = luhn.calc_check_digit(body)
    if not valid:
        check = str((int(check) + g.rng.randint(1, 9)) % 10)
    return body + check


def _format_card(g: _Gen, number: str) -> str:
    style = g.rng.choice(["compact", "space4", "dash4", "network"])
    if style == "compact":
        return number
    if style == "network" and len(number) in (14, 15):
        cuts = (4, 10)  # Amex 4-6-5, Diners 4-6-4
        return " ".join([number[: cuts[0]], number[cuts[0] : cuts[1]], number[cuts[1] :]])
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return ("-" if style == "dash4" else " ").join(groups)


_CARD_TEMPLATES = [
    "Please charge my card {x} for the renewal.",
    "Card number: {x}, exp 09/27.",
    "My {net} is {x} — can you check why it was declined?",
    'billing: {{"card": "{x}", "name": "{name}"}}',
    "The customer read out {x} over the phone.",
    "Refund to {x} please",
]


def cards(g: _Gen, n: int) -> list[Case]:
    out: list[Case] = []
    for i in range(n):
        net, prefix, lengths = _NETWORKS[i % len(_NETWORKS)]
        number = _card_number(g, prefix(g.rng), g.rng.choice(lengths))
        text = g.embed(_CARD_TEMPLATES, x=_format_card(g, number), net=net, name=g.en.name())
        out.append({"text": text, "classes": ["payment_card"]})
    return out


# ---------------------------------------------------------------- IBAN

_IBAN_LOCALES = ["de_DE", "en_GB", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL"]
_IBAN_TEMPLATES = [
    "Please wire the deposit to IBAN {x} by Friday.",
    "Bankverbindung: {x} ({name})",
    "Account {x}, reference {ref}.",
    "Send the refund to {x}.",
]


def _valid_iban(g: _Gen, locale: str) -> str:
    while True:
        number = str(g.fake[locale].iban())
        if iban.is_valid(number):
            return number


def ibans(g: _Gen, n: int) -> list[Case]:
    out: list[Case] = []
    for i in range(n):
        number = _valid_iban(g, _IBAN_LOCALES[i % len(_IBAN_LOCALES)])
        x = iban.format(number) if g.rng.random() < 0.5 else number
        ref = "INV-" + g.digits(6)
        text = g.embed(_IBAN_TEMPLATES, x=x, name=g.en.name(), ref=ref)
        out.append({"text": text, "classes": ["iban"]})
    return out


# ---------------------------------------------------------------- US SSN

_SSN_TEMPLATES = [
    "My social security number is {x}.",
    "SSN: {x}",
    "Applicant {name}, SSN {x}, DOB 1985-03-12.",
    "verify {x} against the W-2",
]


def _ssn_parts(g: _Gen) -> tuple[int, int, int]:
    area = g.rng.choice([a for a in range(1, 900) if a != 666])
    return area, g.rng.randint(1, 99), g.rng.randint(1, 9999)


def ssns(g: _Gen, n: int) -> list[Case]:
    out: list[Case] = []
    for _ in range(n):
        area, group, serial = _ssn_parts(g)
        sep = g.rng.choice(["-", "-", " "])
        x = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
        out.append({"text": g.embed(_SSN_TEMPLATES, x=x, name=g.en.name()), "classes": ["us_ssn"]})
    return out


# ---------------------------------------------------------------- email

_EMAIL_TEMPLATES = [
    "You can reach me at {x}.",
    "Forward the invoice to {x} and cc the team.",
    "From: {name} <{x}>",
    "email={x}",
    "Contact: {x}",
]


def _email(g: _Gen) -> str:
    kind = g.rng.randrange(4)
    if kind == 0:
        return str(g.en.email())
    if kind == 1:
        return str(g.fake.free_email())
    if kind == 2:
        first, last = g.en.first_name().lower(), g.en.last_name().lower()
        return f"{first}.{last}+{g.en.word()}@mail.{g.en.domain_name()}"
    return str(g.fake.company_email())


def emails(g: _Gen, n: int) -> list[Case]:
    return [
        {"text": g.embed(_EMAIL_TEMPLATES, x=_email(g), name=g.en.name()), "classes": ["email"]}
        for _ in range(n)
    ]


# ---------------------------------------------------------------- phone numbers

_NATIONAL_REGIONS = ["US", "GB", "DE", "FR"]  # the detector's default regions
_E164_REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "ES", "IT", "NL", "CA", "MX"]
_PHONE_TYPES = [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]
_PHONE_TEMPLATES = [
    "Call me at {x} tomorrow.",
    "My number is {x}.",
    "Tel: {x}",
    "reach the front desk on {x} after five",
    "Mobile {x} (evenings only)",
]


def _valid_phone(g: _Gen, region: str) -> phonenumbers.PhoneNumber:
    """A random valid number: an example number with its last digits re-rolled."""
    while True:
        example = phonenumbers.example_number_for_type(region, g.rng.choice(_PHONE_TYPES))
        if example is None:
            continue
        nsn = str(example.national_number)
        tail = min(4, len(nsn) - 3)
        candidate = phonenumbers.PhoneNumber(
            country_code=example.country_code, national_number=int(nsn[:-tail] + g.digits(tail))
        )
        if phonenumbers.is_valid_number(candidate):
            return candidate


def _format_phone(g: _Gen, number: phonenumbers.PhoneNumber, national: bool) -> str:
    fmt = phonenumbers.PhoneNumberFormat
    if national:
        text = phonenumbers.format_number(number, fmt.NATIONAL)
        if number.country_code == 1 and g.rng.random() < 0.5:
            digits = str(number.national_number)
            sep = g.rng.choice(["-", "."])
            text = sep.join([digits[:3], digits[3:6], digits[6:]])
        return str(text)
    return str(phonenumbers.format_number(number, g.rng.choice([fmt.E164, fmt.INTERNATIONAL])))


def phones(g: _Gen, n: int) -> list[Case]:
    out: list[Case] = []
    for i in range(n):
        national = i % 2 == 0
        regions = _NATIONAL_REGIONS if national else _E164_REGIONS
        number = _valid_phone(g, regions[(i // 2) % len(regions)])
        x = _format_phone(g, number, national)
        out.append({"text": g.embed(_PHONE_TEMPLATES, x=x), "classes": ["phone"]})
    return out


_FAKER_PHONE_LOCALES = [("en_US", "US"), ("en_GB", "GB"), ("de_DE", "DE"), ("fr_FR", "FR")]


def faker_phones(g: _Gen, n: int) -> list[Case]:
    """Faker's own phone formats (extensions, "(0)", compact); truth is libphonenumber's matcher.

    A string counts as a phone only when PhoneNumberMatcher (leniency VALID) finds a valid
    number spanning all of it; strings it rejects are left out rather than guessed at.
    """
    out: list[Case] = []
    i = 0
    while len(out) < n:
        locale, region = _FAKER_PHONE_LOCALES[i % len(_FAKER_PHONE_LOCALES)]
        i += 1
        x = str(g.fake[locale].phone_number())
        matcher = phonenumbers.PhoneNumberMatcher(x, region, leniency=phonenumbers.Leniency.VALID)
        if [m.raw_string for m in matcher] == [x]:
            out.append({"text": g.embed(_PHONE_TEMPLATES, x=x), "classes": ["phone"]})
    return out


# ---------------------------------------------------------------- secrets


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(g: _Gen) -> str:
    header = _b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": g.digits(8), "name": g.en.name(), "iat": 1700000000 + g.rng.randint(0, 10**6)}
    payload = _b64u(json.dumps(claims).encode())
    return f"{header}.{payload}.{_b64u(g.rng.randbytes(32))}"


def _pem(g: _Gen) -> str:
    kind = g.rng.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
    body = base64.b64encode(g.rng.randbytes(144)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


def _url_creds(g: _Gen) -> str:
    scheme = g.rng.choice(["postgres", "mysql", "mongodb+srv", "redis", "amqp", "https"])
    user = g.en.user_name()
    password = g.en.password(length=14, special_chars=False)
    return f"{scheme}://{user}:{password}@{g.en.domain_name()}:{g.rng.randint(1000, 9999)}/db"


def _secret(g: _Gen, kind: int) -> str:
    makers: list[Callable[[], str]] = [
        lambda: g.rng.choice(["AKIA", "ASIA"]) + g.chars(UPPER_ALNUM, 16),
        lambda: g.rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + g.chars(ALNUM, 36),
        lambda: "github_pat_" + g.chars(ALNUM, 22) + "_" + g.chars(ALNUM, 59),
        lambda: "sk-" + g.chars(ALNUM, 48),
        lambda: "sk-proj-" + g.chars(B64URL, 120) + g.digits(2),
        lambda: "sk-ant-api03-" + g.chars(B64URL, 93) + "AA",
        lambda: f"xox{g.rng.choice('abprs')}-{g.digits(12)}-{g.digits(13)}-{g.chars(ALNUM, 24)}",
        lambda: _jwt(g),
        lambda: _pem(g),
        lambda: _url_creds(g),
    ]
    return makers[kind % len(makers)]()


_SECRET_TEMPLATES = [
    "Here is my config: API_KEY={x}",
    'Why does this fail? token = "{x}"',
    "export SECRET={x}",
    "Authorization: Bearer {x}",
    "connect with {x} and run the migration",
    "{x}",
]


def secrets(g: _Gen, n: int) -> list[Case]:
    return [
        {"text": g.embed(_SECRET_TEMPLATES, x=_secret(g, i)), "classes": ["secret"]}
        for i in range(n)
    ]


def mixed(g: _Gen, n: int) -> list[Case]:
    """Two classes in one message, as in a signature block or a support ticket."""
    out: list[Case] = []
    for _ in range(n):
        phone = _format_phone(g, _valid_phone(g, g.rng.choice(_NATIONAL_REGIONS)), False)
        card = _format_card(g, _card_number(g, "4", 16))
        if g.rng.random() < 0.5:
            text = f"{g.en.name()}\n{_email(g)}\n{phone}"
            out.append({"text": text, "classes": ["email", "phone"]})
        else:
            text = f"Card {card} belongs to {_email(g)}, please confirm."
            out.append({"text": text, "classes": ["email", "payment_card"]})
    return out


# ---------------------------------------------------------------- hard negatives


def _isbn10(g: _Gen) -> str:
    body = g.digits(9)
    check = sum((10 - i) * int(d) for i, d in enumerate(body)) % 11
    digit = (11 - check) % 11
    number = body + ("X" if digit == 10 else str(digit))
    if g.rng.random() < 0.5:
        return number
    return f"{number[0]}-{number[1:4]}-{number[4:9]}-{number[9]}"


def _isbn13(g: _Gen) -> str:
    body = g.rng.choice(["978", "979"]) + g.digits(9)
    number = body + ean.calc_check_digit(body)
    if g.rng.random() < 0.5:
        return number
    return f"{number[:3]}-{number[3]}-{number[4:6]}-{number[6:12]}-{number[12]}"


def _bad_ssn(g: _Gen) -> str:
    area, group, serial = _ssn_parts(g)
    broken = g.rng.randrange(5)
    if broken == 0:
        area = 0
    elif broken == 1:
        area = 666
    elif broken == 2:
        area = g.rng.randint(900, 999)
    elif broken == 3:
        group = 0
    else:
        serial = 0
    return f"{area:03d}-{group:02d}-{serial:04d}"


def _bad_iban(g: _Gen) -> str:
    number = _valid_iban(g, g.rng.choice(_IBAN_LOCALES))
    check = int(number[2:4])
    return number[:2] + f"{(check + g.rng.randint(1, 50)) % 97 + 2:02d}"[-2:] + number[4:]


def _negative_values(g: _Gen) -> list[tuple[str, str]]:
    """(template, value) look-alikes; each is rebuilt per call so values differ."""
    ts = g.en.date_time_between(start_date=_EPOCH_FROM, end_date=_EPOCH_TO, tzinfo=UTC)
    near_miss_secrets = [
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        f"https://{g.en.user_name()}@github.com/org/repo.git",
        f"postgres://localhost:{g.rng.randint(1000, 9999)}/app",
        "the sk-learn style API",
        "AKIA is the prefix of long-term AWS key ids",
        "xoxo, see you soon",
    ]
    return [
        ("Your order #{x} has shipped.", g.digits(g.rng.randint(6, 10))),
        ("Order {x} is delayed.", f"ORD-{ts.year}-{g.digits(6)}"),
        ("PO {x} was approved", g.digits(10)),
        ("invoice {x}", f"INV-{ts:%Y%m%d}-{g.digits(4)}"),
        ("ISBN {x}", _isbn10(g)),
        ("ISBN-13: {x}", _isbn13(g)),
        ("request id {x}", str(g.fake.uuid4())),
        ("logged at {x}", f"{ts:%Y-%m-%d %H:%M:%S}"),
        ("created {x}", ts.isoformat(timespec=g.rng.choice(["seconds", "microseconds"]))),
        ("created {x}", f"{ts:%Y-%m-%dT%H:%M:%S.%f}Z"),
        ("epoch {x}", str(int(ts.timestamp()))),
        ("ts_ms={x}", str(int(ts.timestamp() * 1000))),
        ("due {x}", f"{ts:%m/%d/%Y}"),
        ("am {x}", f"{ts:%d.%m.%Y}"),
        ("host {x}", str(g.fake.ipv4())),
        ("listening on {x}", f"{g.fake.ipv4_private()}:{g.rng.randint(1024, 65535)}"),
        ("ipv6 {x}", str(g.fake.ipv6())),
        ("upgrade to {x}", f"v{g.rng.randint(0, 20)}.{g.rng.randint(0, 40)}.{g.digits(2)}"),
        ("Python {x}", f"3.{g.rng.randint(6, 13)}.{g.rng.randint(0, 20)}"),
        ("costs {x}", f"${g.rng.randint(1, 99)},{g.digits(3)}.{g.digits(2)}"),
        ("total {x}", f"{g.rng.randint(1, 999)}.{g.digits(3)},{g.digits(2)} EUR"),
        ("card number {x} is not valid", _format_card(g, _card_number(g, "4", 16, valid=False))),
        ("number {x}", _card_number(g, g.rng.choice(["51", "4", "6011"]), 16, valid=False)),
        ("routing number {x}", g.digits(9)),
        ("EIN {x}", f"{g.digits(2)}-{g.digits(7)}"),
        ("SSN placeholder {x}", _bad_ssn(g)),
        ("IBAN (typo) {x}", _bad_iban(g)),
        ("sha256 {x}", g.rng.randbytes(32).hex()),
        ("commit {x}", g.rng.randbytes(20).hex()),
        ("md5 {x}", g.rng.randbytes(16).hex()),
        ("{x}", g.rng.choice(near_miss_secrets)),
        ("ping {x} in the channel", "@" + g.en.user_name()),
        ("use {x} for retina", f"icon@{g.rng.randint(2, 3)}x.png"),
        ("coordinates {x}", f"{g.en.latitude()}, {g.en.longitude()}"),
        ("pages {x}", f"{g.rng.randint(1, 400)}-{g.rng.randint(401, 900)}"),
        ("{x}", str(g.en.paragraph(nb_sentences=4))),
    ]


def negatives(g: _Gen, n: int) -> list[Case]:
    out: list[Case] = []
    for i in range(n):
        options = _negative_values(g)
        template, value = options[i % len(options)]
        out.append({"text": g.embed([template], x=value), "classes": []})
    return out


# ---------------------------------------------------------------- corpus

_COUNTS = {
    cards: 150,
    ibans: 120,
    ssns: 100,
    emails: 120,
    phones: 160,
    faker_phones: 80,
    secrets: 160,
    mixed: 60,
}
_NEGATIVES = 800


def generate_corpus(scale: float = 1.0, seed: int = DEFAULT_SEED) -> list[Case]:
    """The labelled corpus; `scale` shrinks or grows every part by the same factor."""
    g = _Gen(seed)
    cases: list[Case] = []
    for make, count in _COUNTS.items():
        cases.extend(make(g, max(1, round(count * scale))))
    cases.extend(negatives(g, max(1, round(_NEGATIVES * scale))))
    return cases


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path("var/sensitivity_corpus.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    cases = generate_corpus()
    out.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    negative = sum(1 for c in cases if not c["classes"])
    print(f"wrote {len(cases)} cases ({negative} negatives) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
