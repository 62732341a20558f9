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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import phonenumbers

from spillgate.routing import sensitivity_rules as rules

PAYMENT_CARD: Final = "payment_card"
IBAN: Final = "iban"
US_SSN: Final = "us_ssn"
EMAIL: Final = "email"
PHONE: Final = "phone"
SECRET: Final = "secret"

ALL_CLASSES: Final = frozenset({PAYMENT_CARD, IBAN, US_SSN, EMAIL, PHONE, SECRET})


class SensitivityDetector:
    """Finds which entity classes occur in a set of texts. Stateless after construction."""

    __slots__ = ("_rules",)

    def __init__(self) -> None:
        self._rules = rules.compile_rules()
        _warm_phone_metadata()

    def __repr__(self) -> str:
        return "SensitivityDetector()"

    def scan(self, texts: Iterable[str]) -> frozenset[str]:
        """Entity classes found in any of `texts`; non-str items are skipped."""
        found: set[str] = set()
        for text in texts:
            if isinstance(text, str) and text:
                self._scan_one(text, found)
                if len(found) == len(ALL_CLASSES):
                    break
        return frozenset(found)

    def _scan_one(self, text: str, found: set[str]) -> None:
        r = self._rules
        if SECRET not in found and rules.find_secret(r, text):
            found.add(SECRET)
        if EMAIL not in found and "@" in text and rules.find_email(r, text):
            found.add(EMAIL)
        # Digit entities all live inside a cluster of >= 7 digits; rules see only those
        # windows. Order matters: each rule marks its spans taken so later, looser rules
        # (card after IBAN, phone last) skip them.
        taken: list[rules.Span] = []
        for m in r.digit_cluster.finditer(text):
            window = m.span()
            if rules.find_ibans(r, text, window, taken):
                found.add(IBAN)
            if rules.find_cards(r, text, window, taken):
                found.add(PAYMENT_CARD)
            if rules.find_ssns(r, text, window, taken):
                found.add(US_SSN)
            if PHONE not in found and rules.find_phone(r, text, window, taken):
                found.add(PHONE)


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
