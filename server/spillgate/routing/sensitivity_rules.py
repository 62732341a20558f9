"""Per-class detection rules: candidate regexes, then validators run only on candidates.

Speed comes from never running a rule's regex over the whole text. The detector makes one
pass for digit clusters (runs of >= 7 digits joined by a few separators) and hands each
rule a window around each cluster; secret rules are anchored on the occurrences of a literal
(`str.find`, which is fast) and emails on each '@'. Validators (Luhn, mod-97, SSN ranges,
libphonenumber) run on the few candidates left.

`taken` collects the spans already confirmed in a text (IBAN first, then card, SSN, phone), so
a later, looser rule does not read an earlier entity's digits as something else (the digits
of a spaced IBAN as a card, say). Rules report only *whether* a class occurs, never what
matched: values must not reach logs, metrics or exceptions.

Patterns are compiled once per detector (`compile_rules`), not at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

Span = tuple[int, int]

# Regions tried for numbers written in national format (no leading "+").
DEFAULT_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")
NANP_REGIONS: tuple[str | None, ...] = ("US",)
TRUNK_ZERO_REGIONS: tuple[str | None, ...] = ("GB", "DE", "FR")
_INTERNATIONAL: tuple[str | None, ...] = (None,)

# Words that make an unformatted digit run read as a phone number ("call 4155552671").
_PHONE_CONTEXT = (
    r"\b(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|sms|text\s+me"
    r"|(?:my|your|his|her|our|their)\s+number)\b"
)
# RFC 5322 dot-atom characters of an email local part.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]"
# Digit rules: not glued to a word, a sign, a decimal point, a path, a longer number or the
# seconds of a time ("05:02:04.182201").
_LEFT = r"(?<![\w+.\-/])(?<!\d[:,])"
# Phones also refuse to start or end inside a longer chain of digit groups ("4056 0642 8382
# 3599" is a mistyped card, not a German number after "4056 "), never follow "#" (an order or
# ticket number), and may be followed by an extension "x123".
_PHONE_LEFT = _LEFT + r"(?<!\d[ .\-])(?<!#)"
_PHONE_RIGHT = r"(?!(?!x\d)[\w/]|[ .\-]\d)"
_B64U = r"[A-Za-z0-9_\-]"

# How far outside a digit cluster a match may begin or end (see the patterns below).
IBAN_REACH = 48
DIGIT_REACH = 2


@dataclass(frozen=True, slots=True)
class SecretRule:
    """A secret pattern tried only where its anchor occurs.

    `str.find` of one character is a memchr; of a few characters it costs more, and a regex
    scan far more. So each rule names a cheap, rare `anchor`; a hit at index i means the
    secret would start at i - `back` with (one of) `prefix`, and only then is `pattern`
    matched there.
    """

    anchor: str
    back: int
    prefix: str | tuple[str, ...]
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """Every regex the detector uses, compiled once."""

    digit_cluster: re.Pattern[str]
    card: re.Pattern[str]
    iban: re.Pattern[str]
    ssn: re.Pattern[str]
    phone_e164: re.Pattern[str]
    phone_nanp: re.Pattern[str]
    phone_trunk: re.Pattern[str]
    phone_bare: re.Pattern[str]
    phone_context: re.Pattern[str]
    date_like: re.Pattern[str]
    tax_id_shape: re.Pattern[str]
    email_local: re.Pattern[str]
    email_domain: re.Pattern[str]
    secrets: tuple[SecretRule, ...]


def compile_rules() -> CompiledRules:
    """Compile every pattern; called once by the detector's constructor."""

    def rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
        return re.compile(pattern, flags | re.ASCII)

    return CompiledRules(
        # >= 7 digits joined by at most three of " .()/-": every card, IBAN digit run, SSN
        # and phone number lies inside one such cluster. "[0-9]" scans faster than "\d".
        digit_cluster=rx(r"[0-9](?:[ .()/\-]{0,3}[0-9]){6,}"),
        # 12-19 digits, single spaces or dashes between any digits; a longer run never matches.
        card=rx(_LEFT + r"\d(?:[ \-]?\d){11,18}(?![\w/]|[ .\-]?\d)"),
        # Country code, check digits, then the BBAN compact or in groups of four.
        iban=rx(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        ssn=rx(_LEFT + r"(\d{3})([ \-])(\d{2})\2(\d{4})(?![\w/]|[.\-]?\d)"),
        # "+" then 8-15 digits; up to two of " .-()" between digits ("+1 (415) 555-2671").
        phone_e164=rx(r"(?<![\w+])\+(?:[ .\-()]{0,2}\d){8,15}" + _PHONE_RIGHT),
        # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1-415-555-2671.
        phone_nanp=rx(
            _PHONE_LEFT
            + r"(?:1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"
            + _PHONE_RIGHT
        ),
        # Trunk-prefix "0" national formats, area code set apart: 020 7946 0958,
        # (030) 1234567, (030)1234567, 0171 / 1234567, 01 23 45 67 89, 0044 20 7946 0958.
        phone_trunk=rx(
            _PHONE_LEFT
            + r"(?:\(0\d{1,4}\) ?|0\d{1,4}(?: ?[.\-/] ?| ))\d{2,8}(?:(?: ?[.\-/] ?| )\d{2,8}){0,3}"
            + _PHONE_RIGHT
        ),
        # Unformatted national numbers count only after a phone word (see phone_context).
        phone_bare=rx(_PHONE_LEFT + r"(?:1?\d{10}|0\d{8,11})" + _PHONE_RIGHT),
        phone_context=rx(_PHONE_CONTEXT, re.IGNORECASE),
        # 01.05.2024, 05/01/24, 01-05-2024: dates, never phones.
        date_like=rx(r"\d{1,2}([./\-])\d{1,2}\1\d{2,4}"),
        # US tax ids, valid or not, are never phone numbers: SSN AAA-GG-SSSS, EIN NN-NNNNNNN.
        tax_id_shape=rx(r"\d{3}([ \-])\d{2}\1\d{4}|\d{2}-\d{7}"),
        email_local=rx(rf"{_ATOM}+(?:\.{_ATOM}+)*\Z"),
        email_domain=rx(
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-])"
        ),
        secrets=tuple(
            SecretRule(anchor, back, prefix, rx(pattern))
            for anchor, back, prefix, pattern in _SECRETS
        ),
    )


# (anchor, back, prefix, pattern matched at the prefix)
_SECRETS: tuple[tuple[str, int, str | tuple[str, ...], str], ...] = (
    ("K", 1, "AKIA", r"\bAKIA[A-Z0-9]{16}\b"),
    ("ASIA", 0, "ASIA", r"\bASIA[A-Z0-9]{16}\b"),
    ("gh", 0, ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b"),
    ("github_pat_", 0, "github_pat_", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
    # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-): a long token with at
    # least one digit, so hyphenated words such as "sk-style-naming-convention" stay clean.
    ("-", 2, "sk-", r"(?<![\w\-])sk-(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}"),
    ("-", 4, "xox", r"\bxox[abprs]-[A-Za-z0-9]+-[A-Za-z0-9\-]{8,}"),
    ("-", 0, "-----BEGIN ", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY"),
    ("J", 2, "eyJ", rf"\beyJ{_B64U}{{8,}}\.{_B64U}{{8,}}\."),
    # scheme://user:password@host, matched from the "://".
    ("://", 0, "://", r"://[^\s/:@?#]*:[^\s/@?#]+@[A-Za-z0-9\-.\[]"),
)


def _overlaps(span: Span, taken: list[Span]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in taken)


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


# ---------------------------------------------------------------- payment cards


def _card_iin_plausible(digits: str) -> bool:
    """ISO/IEC 7812 issuer prefixes of the card networks; cuts Luhn's 1-in-10 false hits.

    Visa 4; Mastercard 51-55 and 2221-2720; Mir 2200-2204; Amex 34/37; Diners 30/36/38/39;
    JCB 35; Discover/UnionPay/RuPay/Maestro 6; Maestro 50, 56-59; UnionPay 81.
    ISBNs (9...), trunk-prefixed phone numbers (0...) and epoch milliseconds (1...) fall out.
    """
    first = digits[0]
    if first in "456":
        return True
    if first == "3":
        return digits[1] in "0456789"
    if first == "2":
        head = int(digits[:4])
        return 2200 <= head <= 2204 or 2221 <= head <= 2720
    return digits.startswith("81")


def find_cards(rules: CompiledRules, text: str, window: Span, taken: list[Span]) -> bool:
    found = False
    for m in rules.card.finditer(text, window[0], window[1] + DIGIT_REACH):
        if _overlaps(m.span(), taken):
            continue
        digits = _digits(m.group())
        if _card_iin_plausible(digits) and luhn.is_valid(digits):
            taken.append(m.span())
            found = True
    return found


# ---------------------------------------------------------------- IBAN


def find_ibans(rules: CompiledRules, text: str, window: Span, taken: list[Span]) -> bool:
    found = False
    lo, hi = max(0, window[0] - IBAN_REACH), window[1] + IBAN_REACH
    for m in rules.iban.finditer(text, lo, hi):
        if _overlaps(m.span(), taken):
            continue
        # The greedy match may have swallowed a following uppercase word or number group:
        # retry without trailing groups until one validates (a few tries at most).
        groups = m.group().split(" ")
        while groups and sum(map(len, groups)) >= 15:
            if stdnum_iban.is_valid("".join(groups)):
                taken.append((m.start(), m.start() + len(" ".join(groups))))
                found = True
                break
            groups.pop()
    return found


# ---------------------------------------------------------------- US SSN


def find_ssns(rules: CompiledRules, text: str, window: Span, taken: list[Span]) -> bool:
    found = False
    for m in rules.ssn.finditer(text, window[0], window[1] + DIGIT_REACH):
        if _overlaps(m.span(), taken):
            continue
        # stdnum rejects area 000/666/9xx, group 00, serial 0000 and the famous
        # advertising numbers (078-05-1120 ...).
        if stdnum_ssn.is_valid(m.group(1) + m.group(3) + m.group(4)):
            taken.append(m.span())
            found = True
    return found


# ---------------------------------------------------------------- phone numbers


def _valid_phone(candidate: str, regions: tuple[str | None, ...]) -> bool:
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _phone_at(
    rules: CompiledRules, m: re.Match[str], regions: tuple[str | None, ...], taken: list[Span]
) -> bool:
    candidate = m.group()
    if (
        _overlaps(m.span(), taken)
        or rules.date_like.fullmatch(candidate)
        or rules.tax_id_shape.fullmatch(candidate)
        or not _valid_phone(candidate, regions)
    ):
        return False
    taken.append(m.span())
    return True


def find_phone(rules: CompiledRules, text: str, window: Span, taken: list[Span]) -> bool:
    """E.164 anywhere; national formats of the default regions; bare runs after a phone word."""
    lo, hi = max(0, window[0] - DIGIT_REACH), window[1] + DIGIT_REACH
    shapes = (
        (rules.phone_e164, _INTERNATIONAL),
        (rules.phone_nanp, NANP_REGIONS),
        (rules.phone_trunk, TRUNK_ZERO_REGIONS),
    )
    for pattern, regions in shapes:
        for m in pattern.finditer(text, lo, hi):
            if _phone_at(rules, m, regions, taken):
                return True
    for m in rules.phone_bare.finditer(text, lo, hi):
        if not _phone_word_before(rules, text, m.start()):
            continue
        regions = TRUNK_ZERO_REGIONS if m.group().startswith("0") else NANP_REGIONS
        if _phone_at(rules, m, regions, taken):
            return True
    return False


def _phone_word_before(rules: CompiledRules, text: str, start: int) -> bool:
    """A phone word earlier in the same sentence, at most 40 characters back."""
    lo = max(0, start - 40)
    sentence = max(text.rfind(". ", lo, start), text.rfind("\n", lo, start))
    return rules.phone_context.search(text, max(lo, sentence + 1), start) is not None


# ---------------------------------------------------------------- email


def find_email(rules: CompiledRules, text: str) -> bool:
    """Anchor on each '@' and read the local part backwards, the domain forwards.

    Scanning only around '@' keeps the cost proportional to the number of '@' signs rather
    than trying a local-part pattern at every word of the text.
    """
    at = text.find("@")
    while at != -1:
        local = rules.email_local.search(text, max(0, at - 64), at)
        domain = rules.email_domain.match(text, at + 1)
        if local and domain and not _asset_suffix(domain.group()) and not _url_userinfo(text, at):
            return True
        at = text.find("@", at + 1)
    return False


def _url_userinfo(text: str, at: int) -> bool:
    """`scheme://user:pass@host`: the secret rule owns it; `?to=a@b.com` stays an email."""
    scheme = text.rfind("://", max(0, at - 128), at)
    if scheme == -1:
        return False
    userinfo = text[scheme + 3 : at]
    return not any(ch in userinfo for ch in "/?#=& \t\n")


def _asset_suffix(domain: str) -> bool:
    """`icon@2x.png`: a retina asset name, not a mailbox."""
    head = domain.split(".", 1)[0].lower()
    return head[:-1].isdigit() and head.endswith("x")


# ---------------------------------------------------------------- secrets


def find_secret(rules: CompiledRules, text: str) -> bool:
    for rule in rules.secrets:
        at = text.find(rule.anchor)
        while at != -1:
            start = at - rule.back
            if (
                start >= 0
                and text.startswith(rule.prefix, start)
                and rule.pattern.match(text, start)
            ):
                return True
            at = text.find(rule.anchor, at + 1)
    return False
