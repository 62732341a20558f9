"""Sensitive-data detector: decides whether a request's text may ever leave the node.

It runs on every request, so it is built for the common case of clean prose: each rule has a
cheap prefilter (a substring test or one anchored search) and expensive validators (Luhn,
mod-97, libphonenumber) run only on candidates.

    detector = SensitivityDetector()                  # compile once, keep on app.state
    classes = detector.scan_body(body)                # frozenset({"email", "phone"})

Every string of the body is read (sensitivity_walk), each after normalization
(sensitivity_normalize), and the seams between consecutive strings too, so a value split
across two messages is found. A scan that runs past its time budget raises
ScanBudgetExceeded; `scan_body` turns that into the class `scan_budget`.

Only class names leave this module: never the matched values (they must not reach logs,
metrics, the ledger or exception messages). Fail-closed is the caller's job: if `scan` ever
raised, the caller treats the request as sensitive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import phonenumbers

from spillgate.routing import sensitivity_email as email
from spillgate.routing import sensitivity_normalize as normalize
from spillgate.routing import sensitivity_phone as phone
from spillgate.routing import sensitivity_rules as rules
from spillgate.routing import sensitivity_walk as walk

PAYMENT_CARD: Final = "payment_card"
IBAN: Final = "iban"
US_SSN: Final = "us_ssn"
EMAIL: Final = "email"
PHONE: Final = "phone"
SECRET: Final = "secret"

ALL_CLASSES: Final = frozenset({PAYMENT_CARD, IBAN, US_SSN, EMAIL, PHONE, SECRET})


SCAN_BUDGET: Final = "scan_budget"
# Classes that say the node could not read the request, rather than what it found in it.
UNSCANNABLE: Final = walk.UNSCANNABLE_CLASSES | {SCAN_BUDGET}
DEFAULT_BUDGET_S: Final = 1.0
# How much of each side of the seam between two consecutive strings is scanned again, joined,
# to catch a value split across them (long enough for an HTML-entity-encoded card number).
_SEAM = 256
# Substrings without which no spelled-out address can occur ("{at}"/"<at>" forms are read
# only when a spelled "dot" is there too). Each multi-character `in` costs ~3 µs on 4 KB.
_SPELLED_HINTS = ("dot", "at)", "at]")  # looked for in the lower-cased text


class ScanBudgetExceeded(Exception):
    """The scan ran past its time budget; the caller treats the request as unscannable.
    `found` holds the classes found before it stopped (for the header; never values)."""

    def __init__(self, found: frozenset[str] = frozenset()) -> None:
        super().__init__("sensitivity scan ran past its time budget")
        self.found = found


class SensitivityDetector:
    """Finds which entity classes occur in a set of texts. Stateless after construction."""

    __slots__ = ("_budget_s", "_rules")

    def __init__(self, budget_s: float = DEFAULT_BUDGET_S) -> None:
        self._rules = rules.compile_rules()
        self._budget_s = budget_s
        _warm_phone_metadata()
        normalize.warm()

    def __repr__(self) -> str:
        return "SensitivityDetector()"

    def scan_body(self, body: Mapping[str, Any]) -> frozenset[str]:
        """Classes found in every string of `body`, plus why any part of it was unscannable
        (token ids, binary, the time budget): a non-empty answer means "never spill"."""
        extracted = walk.body_texts(body)
        try:
            found = self.scan(extracted.texts)
        except ScanBudgetExceeded as exc:
            found = exc.found | {SCAN_BUDGET}
        return found | extracted.unscannable

    def scan(self, texts: Iterable[str]) -> frozenset[str]:
        """Entity classes found in any of `texts` (each normalized and decoded, and across
        the seams between consecutive texts); non-str items are skipped.

        Raises ScanBudgetExceeded once the scan has run longer than the budget."""
        deadline = time.perf_counter() + self._budget_s
        found: set[str] = set()
        try:
            self._scan_texts(texts, found, deadline)
        except ScanBudgetExceeded:
            raise ScanBudgetExceeded(frozenset(found)) from None
        return frozenset(found)

    def _scan_texts(self, texts: Iterable[str], found: set[str], deadline: float) -> None:
        seam = ""
        for text in texts:
            if not isinstance(text, str) or not text:
                continue
            readings = normalize.views(text)
            for view in readings:
                for piece in _slices(view):
                    self._scan_one(piece, found, deadline)
                    if piece is not view:
                        time.sleep(0)  # hand the GIL over: the event loop may be waiting
            if seam:  # a value split across two messages: "4111 1111" + "1111 1111"
                for view in normalize.views(seam + readings[0][:_SEAM]):
                    self._scan_one(view, found, deadline)
            seam = (seam + readings[0])[-_SEAM:]
            if len(found) == len(ALL_CLASSES):
                break

    def _scan_one(self, text: str, found: set[str], deadline: float) -> None:
        r = self._rules
        if SECRET not in found and rules.find_secret(r, text):
            found.add(SECRET)
        if EMAIL not in found and self._has_email(text):
            found.add(EMAIL)
        # Digit entities all live inside a cluster of >= 7 digits; rules see only those
        # windows. Order matters: each rule marks its spans taken so later, looser rules
        # (card after IBAN, phone last) skip them. A rule whose class is already found is
        # not run again: the answer cannot change, and the cost stays bounded.
        taken = rules.Taken()
        for m in r.digit_cluster.finditer(text):
            if time.perf_counter() > deadline:
                raise ScanBudgetExceeded
            window = m.span()
            if IBAN not in found and rules.find_ibans(r, text, window, taken):
                found.add(IBAN)
            if PAYMENT_CARD not in found and rules.find_cards(r, text, window, taken):
                found.add(PAYMENT_CARD)
            if US_SSN not in found and rules.find_ssns(r, text, window, taken):
                found.add(US_SSN)
            if PHONE not in found and phone.find_phone(r, text, window, taken):
                found.add(PHONE)
            if found.issuperset(_DIGIT_CLASSES):
                break

    def _has_email(self, text: str) -> bool:
        r = self._rules
        if "@" in text and email.find_email(r, text):
            return True
        lowered = text.lower()
        return any(hint in lowered for hint in _SPELLED_HINTS) and email.find_spelled_email(
            r, text
        )


_DIGIT_CLASSES: Final = frozenset({IBAN, PAYMENT_CARD, US_SSN, PHONE})
# Long texts are matched in overlapping slices. Each regex call is one C call holding the
# GIL, and a pattern that fails at every position of a megabyte (Luhn-shaped groups) would
# hold it for most of a second; a slice bounds that to milliseconds, so the event loop keeps
# serving while a worker thread scans. The overlap is longer than any value as written
# (an HTML-entity-encoded card number is ~150 characters), so no value is cut in two.
SLICE: Final = 8192
_OVERLAP: Final = 512
_NUDGE: Final = 64  # how far a slice edge may move to land on a space


def _slices(text: str) -> list[str]:
    """Overlapping slices that start and end at a space or newline where one is near: a slice
    cut inside a number would read its tail without the left context every rule checks."""
    if len(text) <= SLICE:
        return [text]
    out: list[str] = []
    start = 0
    while start + SLICE < len(text):
        end = start + SLICE
        cut = max(text.rfind(" ", end - _NUDGE, end), text.rfind("\n", end - _NUDGE, end))
        end = cut if cut > start else end
        out.append(text[start:end])
        start = end - _OVERLAP
        gap = min(_space_at_or_after(text, " ", start), _space_at_or_after(text, "\n", start))
        start = gap + 1 if gap < start + _NUDGE else start
    out.append(text[start:])
    return out


def _space_at_or_after(text: str, char: str, start: int) -> int:
    found = text.find(char, start, start + _NUDGE)
    return len(text) if found == -1 else found


def _warm_phone_metadata() -> None:
    """libphonenumber loads each region's metadata on first use; pay that at startup."""
    for region in {*rules.DEFAULT_REGIONS, *rules.CONTEXT_REGIONS}:
        example = phonenumbers.example_number(region) if region else None
        if example is not None:
            phonenumbers.is_valid_number(example)
