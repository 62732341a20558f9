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
Phone numbers (`sensitivity_phone`) and emails (`sensitivity_email`) have their own modules;
they use the patterns compiled here.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

Span = tuple[int, int]

# Regions tried for numbers written in national format (no leading "+").
DEFAULT_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")
NANP_REGIONS: tuple[str | None, ...] = ("US",)
TRUNK_ZERO_REGIONS: tuple[str | None, ...] = ("GB", "DE", "FR")
# After a phone word any region's national format counts; "+…" needs none.
CONTEXT_REGIONS: tuple[str | None, ...] = (
    None, "US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "IN", "JP", "AU", "MX", "SE",
    "CH", "AT", "BE", "PT", "IE", "DK", "NO", "FI", "CZ", "RU", "TR", "ZA", "CN", "KR",
)

# Words that make an unformatted digit run read as a phone number ("call 4155552671").
_PHONE_CONTEXT = (
    r"\b(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|sms|text\s+me|dial|ring|contact|kontakt|kontakta|contacto|contatto|contato"
    r"|reach|hotline|landline|telefon|telefono|tel[eé]fono|t[eé]l[eé]phone|portable|handy"
    r"|m[oó]vil|cellulare|celular|cel|mobil|mobiel|matkapuhelin|cep|telefone|fone|numer\s+telefonu|mob|ph|tlf|tfn|tele[fp]oon|puhelin|denwa"
    r"|(?:my|your|his|her|our|their)\s+number|number\s+is)\b"
)
# Words that make a 9-digit run (or dotted groups) read as a US social security number.
_SSN_CONTEXT = r"\b(?:ssn|ssns|social\s+security|soc\.?\s*sec|ss\s*#|ss\s+no|itin|taxpayer)"
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
    phone_grouped: re.Pattern[str]
    phone_context: re.Pattern[str]
    ssn_context: re.Pattern[str]
    spelled_at: re.Pattern[str]
    spelled_domain: re.Pattern[str]
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
        # Up to two separators between digits: "4111  1111  1111  1111" (double spaces).
        card=rx(_LEFT + r"\d(?:[ \-./]{0,2}\d){11,18}(?![\w/]|[ .\-/]{0,2}\d)"),
        # Country code, check digits, then the BBAN compact or in groups of four.
        # Case-insensitive: "de89 3704 …" is the same account as "DE89 3704 …".
        iban=rx(r"\b[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2,7}(?:[ \-]?[A-Z0-9]{1,3})?\b",
                re.IGNORECASE),
        # AAA-GG-SSSS with one repeated separator, or none (then only after an SSN word).
        ssn=rx(_LEFT + r"(\d{3})([ \-.]?)(\d{2})\2(\d{4})(?![\w/]|[.\-]?\d)"),
        ssn_context=rx(_SSN_CONTEXT, re.IGNORECASE),
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
        # Any grouping of 2-6 digit groups (optionally "+", "(0)", parentheses), read as a
        # phone only after a phone word: "teléfono 912 34 56 78", "Tel. 06-12345678".
        phone_grouped=rx(
            _PHONE_LEFT + r"(?:\+|\(\+?\d{1,4}\)[ .\-]?)?\d{1,15}"
            r"(?:(?: ?\(0\) ?| ?[.\-/] ?|[ ()]{1,2})\d{1,12}){0,6}" + _PHONE_RIGHT
        ),
        phone_context=rx(_PHONE_CONTEXT, re.IGNORECASE),
        # 01.05.2024, 05/01/24, 01-05-2024: dates, never phones.
        date_like=rx(r"\d{1,2}([./\-])\d{1,2}\1\d{2,4}"),
        # US tax ids, valid or not, are never phone numbers: SSN AAA-GG-SSSS, EIN NN-NNNNNNN.
        tax_id_shape=rx(r"\d{3}([ \-])\d{2}\1\d{4}|\d{2}-\d{7}"),
        email_local=rx(rf"{_ATOM}+(?:\.{_ATOM}+)*\Z"),
        # Spelled-out addresses: "jane at example dot org", "jane [at] example [dot] org".
        spelled_at=rx(r"[A-Za-z0-9](?: +at +| *[(\[{<]at[)\]}>] *)(?=[A-Za-z0-9])", re.IGNORECASE),
        spelled_domain=rx(
            r"[A-Za-z0-9\-]{1,63}(?:(?: +dot +| *[(\[{<]dot[)\]}>] *|\.)[A-Za-z0-9\-]{1,63}){1,4}"
            r"(?![\w\-])",
            re.IGNORECASE,
        ),
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


_NOT_DIGITS = {code: None for code in range(128) if not chr(code).isdigit()}


class Taken:
    """The spans already confirmed in one text, kept sorted; they never overlap each other,
    so one bisect finds the only span a candidate could overlap (log time, not a scan)."""

    __slots__ = ("_ends", "_starts", "iban_from")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        # IBAN windows reach past their digit cluster and so overlap the next one's: where
        # the next IBAN search may start, so no stretch of text is searched more than twice.
        self.iban_from = 0

    def overlaps(self, span: Span) -> bool:
        i = bisect.bisect_left(self._starts, span[1])
        return i > 0 and self._ends[i - 1] > span[0]

    def add(self, span: Span) -> None:
        i = bisect.bisect_left(self._starts, span[0])
        self._starts.insert(i, span[0])
        self._ends.insert(i, span[1])


def digits_of(s: str) -> str:
    # Candidates come from ASCII-only patterns: deleting the other ASCII characters is enough.
    return s.translate(_NOT_DIGITS)


# ---------------------------------------------------------------- payment cards


def _card_iin_plausible(digits: str) -> bool:
    """ISO/IEC 7812 issuer prefixes of the card networks; cuts Luhn's 1-in-10 false hits.

    Visa 4; Mastercard 51-55 and 2221-2720; Mir 2200-2204, Borica 2205; Amex 34/37; Diners
    30/36/38/39; JCB 35 and the 15-digit 1800/2131; UATP 1 (15 digits); Discover/UnionPay/
    RuPay/Maestro/Verve 6; Maestro/Dankort 50, 56-59; UnionPay/RuPay 81/82; Troy 9792.
    ISBNs (978/979), trunk-prefixed phone numbers (0...) and epoch milliseconds (13 digits
    of 1...) fall out.
    """
    first = digits[0]
    if first in "456":
        return True
    if first == "3":
        return digits[1] in "0456789"
    if first == "2":
        head = int(digits[:4])
        return 2200 <= head <= 2205 or 2221 <= head <= 2720 or head == 2131
    if first == "1":
        return len(digits) == 15  # UATP, JCB 1800
    if first == "8":
        return digits[1] in "12"
    return digits.startswith("9792") and len(digits) == 16


def _inside_digit_groups(text: str, start: int) -> bool:
    """The match continues a chain of digit groups ("2741 4420 0307 …": the tail of a 22-digit
    tracking number), unless that group is glued to a word ("visa13 4222…")."""
    i = start - 1
    separators = 0
    while i >= 0 and separators < 2 and text[i] in " .-/":
        i, separators = i - 1, separators + 1
    if separators == 0 or i < 0 or not text[i].isdigit():
        return False
    while i >= 0 and text[i].isdigit():
        i -= 1
    return i < 0 or not text[i].isalpha()


def find_cards(rules: CompiledRules, text: str, window: Span, taken: Taken) -> bool:
    found = False
    for m in rules.card.finditer(text, window[0], window[1] + DIGIT_REACH):
        if taken.overlaps(m.span()):
            continue
        digits = digits_of(m.group())
        if (
            _card_iin_plausible(digits)
            and luhn.is_valid(digits)
            and not _inside_digit_groups(text, m.start())
        ):
            taken.add(m.span())
            found = True
    return found


# ---------------------------------------------------------------- IBAN


_IBAN_SEPARATOR = re.compile(r"[ \-]")
_IBAN_LETTERS = {ord(c): str(ord(c) - ord("A") + 10) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _iban_valid(compact: str) -> bool:
    """mod-97 first, as one big-int remainder (C speed), then stdnum's country formats: most
    candidates fail the cheap test, and stdnum's validation costs ~100x more."""
    upper = compact.upper()
    rearranged = (upper[4:] + upper[:4]).translate(_IBAN_LETTERS)
    if not rearranged.isdigit() or int(rearranged) % 97 != 1:
        return False
    return bool(stdnum_iban.is_valid(upper))


def find_ibans(rules: CompiledRules, text: str, window: Span, taken: Taken) -> bool:
    found = False
    lo = max(0, window[0] - IBAN_REACH, taken.iban_from)
    hi = window[1] + IBAN_REACH
    taken.iban_from = max(taken.iban_from, hi - IBAN_REACH)
    for m in rules.iban.finditer(text, lo, hi):
        if taken.overlaps(m.span()):
            continue
        # The greedy match may have swallowed a following uppercase word or number group:
        # retry without trailing groups until one validates (a few tries at most).
        groups = _IBAN_SEPARATOR.split(m.group())
        while groups and sum(map(len, groups)) >= 15:
            if _iban_valid("".join(groups)):
                taken.add((m.start(), m.start() + len(" ".join(groups))))
                found = True
                break
            groups.pop()
    return found


def word_before(context: re.Pattern[str], text: str, start: int) -> bool:
    """A context word at most 40 characters back, with no sentence end after it (the dot of
    an abbreviation right after the word, "Tel. …", "Soc. Sec. …", does not end it)."""
    last = _last_match(context, text, max(0, start - 40), start)
    if last is None:
        return False
    return _SENTENCE_END.search(text, last, start) is None


_SENTENCE_END = re.compile(r"[.!?] +[A-Z]|\n")


def _last_match(pattern: re.Pattern[str], text: str, lo: int, hi: int) -> int | None:
    end = None
    for m in pattern.finditer(text, lo, hi):
        end = m.end()
    return end


# ---------------------------------------------------------------- US SSN


def find_ssns(rules: CompiledRules, text: str, window: Span, taken: Taken) -> bool:
    """AAA-GG-SSSS or AAA GG SSSS anywhere; no separator or dots only after an SSN word."""
    found = False
    for m in rules.ssn.finditer(text, window[0], window[1] + DIGIT_REACH):
        if taken.overlaps(m.span()):
            continue
        if m.group(2) in ("", ".") and not word_before(rules.ssn_context, text, m.start()):
            continue
        # stdnum rejects area 000/666/9xx, group 00, serial 0000 and the famous
        # advertising numbers (078-05-1120 ...).
        if stdnum_ssn.is_valid(m.group(1) + m.group(3) + m.group(4)):
            taken.add(m.span())
            found = True
    return found


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
