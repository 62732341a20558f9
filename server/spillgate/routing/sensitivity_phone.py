"""Phone numbers: typical groupings anywhere, any grouping after a phone word.

Detection for protection, not validation: libphonenumber's `is_possible_number` (the length
fits some numbering plan), never `is_valid_number` (the range is assigned today). A number a
user typed is personal data either way. Precision comes from where a candidate may count: an
E.164 "+…", a North American or trunk-"0" national shape anywhere; any other grouping or a
bare digit run only after a phone word ("tel.", "WhatsApp", "teléfono" …); never after a
label that says it is something else ("serial", "ABN", "ZIP" …), never a date or a US tax id.
"""

from __future__ import annotations

import re

import phonenumbers

from spillgate.routing.sensitivity_rules import (
    CONTEXT_REGIONS,
    DIGIT_REACH,
    NANP_REGIONS,
    TRUNK_ZERO_REGIONS,
    CompiledRules,
    Span,
    Taken,
    digits_of,
    word_before,
)

_INTERNATIONAL: tuple[str | None, ...] = (None,)
# Labels that say a digit group is not a phone number: "ABN 04 575 408 925", "serial
# 0840-9777-1688", "ZIP 09491-3592". The nearest label before a candidate decides. Cards have
# no such exception: Luhn and the IIN ranges keep their false hits rare, and recall comes first.
_NOT_PHONE_LABELS = frozenset(
    {"abn", "acn", "ein", "vat", "tin", "postcode", "zip", "postal", "part", "serial", "sku",
     "ean", "gtin", "upc", "isbn", "issn", "barcode", "order", "invoice", "ref", "reference",
     "tracking", "usps", "ups", "fedex", "dhl", "build", "version", "release", "ticket",
     "batch"}
)
_WORD = re.compile(r"[A-Za-z]+")


def _possible_phone(candidate: str, regions: tuple[str | None, ...]) -> bool:
    """libphonenumber's `is_possible_number`, not `is_valid_number`: a number a user typed is
    personal data whether or not its range is assigned today."""
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return True
    return False


def _phone_at(
    rules: CompiledRules, m: re.Match[str], regions: tuple[str | None, ...], taken: Taken,
    needs_word: bool = False,
) -> bool:
    candidate = m.group()
    digits = len(digits_of(candidate))
    if (  # cheapest tests first: most candidates in clean text are dates and ids
        not 6 <= digits <= 15  # no numbering plan has shorter or longer numbers: skip parsing
        or rules.date_like.fullmatch(candidate)
        or rules.tax_id_shape.fullmatch(candidate)
        or taken.overlaps(m.span())
        or (needs_word and not word_before(rules.phone_context, m.string, m.start()))
        or _labelled_otherwise(rules, m.string, m.start())
        or not _possible_phone(candidate, regions)
    ):
        return False
    taken.add(m.span())
    return True


def find_phone(rules: CompiledRules, text: str, window: Span, taken: Taken) -> bool:
    """Typical groupings anywhere (E.164, North American, trunk-0 national); after a phone
    word, any grouping or a bare run that some region would accept as a number."""
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
    for m in rules.phone_grouped.finditer(text, lo, hi):
        if _phone_at(rules, m, CONTEXT_REGIONS, taken, needs_word=True):
            return True
    return False


def _labelled_otherwise(rules: CompiledRules, text: str, start: int) -> bool:
    """The nearest label in the 24 characters before `start` says "not a phone number"
    (serial, ABN, ZIP, order …) and no phone word comes after it.

    The words are split out and looked up in a set: a case-insensitive alternation of some
    thirty words, tried at every position, costs tens of microseconds per candidate."""
    lo = max(0, start - 24)
    words = _WORD.findall(text, lo, start)
    for word in reversed(words):
        lowered = word.lower()
        if lowered in _NOT_PHONE_LABELS:
            return True
        if rules.phone_context.fullmatch(lowered):
            return False
    return False
