"""Sensitive-data detector: decides whether a request's text may ever leave the node.

It runs on every request, so it is built for the common case of clean prose: each rule has a
cheap prefilter (a substring test or one anchored search) and expensive validators (Luhn,
mod-97, libphonenumber) run only on candidates.

    detector = SensitivityDetector()                  # compile once, keep on app.state
    classes = detector.scan(request_texts(body))      # frozenset({"email", "phone"})

Only class names leave this module: never the matched values (they must not reach logs,
metrics, the ledger or exception messages). Fail-closed is the caller's job: if `scan` ever
raised, the caller treats the request as sensitive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import phonenumbers

from spillgate.routing import sensitivity_normalize as normalize
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
# How much of the previous string is kept to catch a value split across two strings.
_SEAM = 64
_SPELLED_HINTS = (" dot ", "(at)", "[at]", "{at}", "<at>", "(dot)", "[dot]")


class ScanBudgetExceeded(Exception):
    """The scan ran past its time budget; the caller treats the request as unscannable."""


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
        except ScanBudgetExceeded:
            found = frozenset({SCAN_BUDGET})
        return found | extracted.unscannable

    def scan(self, texts: Iterable[str]) -> frozenset[str]:
        """Entity classes found in any of `texts` (each normalized and decoded, and across
        the seams between consecutive texts); non-str items are skipped.

        Raises ScanBudgetExceeded once the scan has run longer than the budget."""
        deadline = time.perf_counter() + self._budget_s
        found: set[str] = set()
        seam = ""
        for text in texts:
            if not isinstance(text, str) or not text:
                continue
            readings = normalize.views(text)
            for view in readings:
                self._scan_one(view, found, deadline)
            if seam:  # a value split across two messages: "4111 1111" + "1111 1111"
                head = readings[0][:_SEAM]
                self._scan_one(seam + head, found, deadline)
                self._scan_one(seam + " " + head, found, deadline)
            seam = (seam + readings[0])[-_SEAM:]
            if len(found) == len(ALL_CLASSES):
                break
        return frozenset(found)

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
            if PHONE not in found and rules.find_phone(r, text, window, taken):
                found.add(PHONE)
            if found.issuperset(_DIGIT_CLASSES):
                break

    def _has_email(self, text: str) -> bool:
        r = self._rules
        if "@" in text and rules.find_email(r, text):
            return True
        lowered = text.lower()
        return any(hint in lowered for hint in _SPELLED_HINTS) and rules.find_spelled_email(
            r, text
        )


_DIGIT_CLASSES: Final = frozenset({IBAN, PAYMENT_CARD, US_SSN, PHONE})


def _warm_phone_metadata() -> None:
    """libphonenumber loads each region's metadata on first use; pay that at startup."""
    for region in rules.DEFAULT_REGIONS:
        example = phonenumbers.example_number(region)
        if example is not None:
            phonenumbers.is_valid_number(example)


# ---------------------------------------------------------------- request bodies


def request_texts(body: Mapping[str, Any]) -> Iterator[str]:
    """Every text an OpenAI request body would send upstream.

    Chat messages of every role (string content, text/refusal parts, image_url URLs, names),
    assistant tool calls and legacy function calls (names and arguments), tool results,
    tool/function definitions (name, description, JSON-schema parameters serialized),
    response_format json_schema, completions `prompt` and `suffix`, embeddings `input`
    (token-id lists are skipped), plus `user`, `stop`, `metadata` and `prediction`, which
    are forwarded too. Anything of an unexpected type is skipped, never raised on.
    """
    if not isinstance(body, Mapping):
        return
    for message in _dicts(body.get("messages")):
        yield from _message_texts(message)
    for tool in _dicts(body.get("tools")):
        function = tool.get("function")
        if isinstance(function, Mapping):
            yield from _definition_texts(function)
    for function in _dicts(body.get("functions")):
        yield from _definition_texts(function)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping):
        schema = response_format.get("json_schema")
        if schema is not None:
            yield _serialize(schema)
    for key in ("prompt", "input", "suffix", "user", "stop"):
        yield from _strings(body.get(key))
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        yield from _strings(list(metadata.values()))
    prediction = body.get("prediction")
    if isinstance(prediction, Mapping):
        yield from _content_texts(prediction.get("content"))


def _message_texts(message: Mapping[str, Any]) -> Iterator[str]:
    yield from _content_texts(message.get("content"))
    for key in ("name", "refusal"):
        yield from _strings(message.get(key))
    for call in _dicts(message.get("tool_calls")):
        function = call.get("function")
        if isinstance(function, Mapping):
            yield from _call_texts(function)
    function_call = message.get("function_call")
    if isinstance(function_call, Mapping):
        yield from _call_texts(function_call)


def _content_texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        return
    for part in content:
        if isinstance(part, str):
            yield part
        elif isinstance(part, Mapping):
            yield from _part_texts(part)


def _part_texts(part: Mapping[str, Any]) -> Iterator[str]:
    for key in ("text", "refusal"):
        yield from _strings(part.get(key))
    image = part.get("image_url")
    if isinstance(image, Mapping):
        image = image.get("url")
    if isinstance(image, str) and not image.startswith("data:"):
        # Inline data: URLs are base64 pixels, not text a detector can read.
        yield image


def _call_texts(function: Mapping[str, Any]) -> Iterator[str]:
    yield from _strings(function.get("name"))
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        yield arguments
    elif arguments is not None:
        yield _serialize(arguments)


def _definition_texts(function: Mapping[str, Any]) -> Iterator[str]:
    yield from _strings(function.get("name"))
    yield from _strings(function.get("description"))
    parameters = function.get("parameters")
    if parameters is not None:
        yield _serialize(parameters)


def _dicts(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))


def _strings(value: Any) -> Iterator[str]:
    """A string, or the strings of a list (token-id lists and other items are skipped)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))


def _serialize(value: Any) -> str:
    # ensure_ascii=False keeps text as written, so "+44 20…" is not hidden behind \u escapes.
    return json.dumps(value, ensure_ascii=False, default=str)
