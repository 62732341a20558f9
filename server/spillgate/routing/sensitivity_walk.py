"""Every string of a request body, for the sensitivity scan: scan by default, skip by exception.

The walk visits the whole JSON body at any depth (messages, tools, metadata, unknown fields,
unknown keys of a message or a content part) and returns each string value to scan, plus each
object key that is not one of the API's own field names (a key is client text too: metadata
keys, the properties of a tool schema, an unknown top-level field). Large integers (>= 7
digits) are scanned as their decimal text: a card number can be sent as a JSON number.

Skipped on purpose (the allowlist, NON_TEXT_FIELDS): enum-like values of `model`, `role`,
`type`, `detail` and a few more, when they look like an identifier; and base64 `data:` URLs
whose media type is an image *and* whose bytes start like one (a PNG, JPEG, GIF or WebP), as
pixels carry no text a rule can read.

What the walk cannot read makes the body unscannable, and a request with an unscannable body
never leaves the node:
- `token_ids`: a `prompt` or embeddings `input` given as token ids (only the tokenizer knows
  what they say);
- `binary`: a base64 payload (a `data:` URL, `input_audio.data`, `file_data`, an Anthropic-style
  `source.data`) that is not an image and does not decode to text.
Text decoded from a `data:` URL or a base64 payload is scanned like any other string.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from spillgate.routing.sensitivity_normalize import decode_base64_text

TOKEN_IDS: Final = "token_ids"
BINARY: Final = "binary"
UNSCANNABLE_CLASSES: Final = frozenset({TOKEN_IDS, BINARY})

# Values of these keys are enums or the route name, skipped when they look like one.
NON_TEXT_FIELDS = frozenset(
    {"model", "role", "type", "detail", "object", "encoding_format", "reasoning_effort",
     "service_tier", "format", "media_type", "finish_reason", "voice", "verbosity"}
)
_ENUM_SHAPE = re.compile(r"[A-Za-z0-9_.:/\-]{1,64}\Z")

# The API's own field names: as keys they say nothing about a person, so they are not scanned
# (their values still are). Any other key is client text and scanned.
API_KEYS = frozenset(
    {"model", "messages", "role", "content", "name", "type", "text", "image_url", "url",
     "detail", "input_audio", "data", "format", "file", "file_id", "file_data", "filename",
     "tool_calls", "id", "function", "arguments", "tool_call_id", "refusal", "audio",
     "tools", "description", "parameters", "strict", "tool_choice", "parallel_tool_calls",
     "functions", "function_call", "response_format", "json_schema", "schema",
     "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "stream",
     "stream_options", "include_usage", "stop", "presence_penalty", "frequency_penalty",
     "logit_bias", "logprobs", "top_logprobs", "seed", "user", "metadata", "store",
     "service_tier", "reasoning_effort", "modalities", "prediction", "prompt", "suffix",
     "echo", "best_of", "input", "encoding_format", "dimensions", "priority", "properties",
     "required", "items", "enum", "additionalProperties", "anyOf", "oneOf", "allOf",
     "source", "media_type", "voice", "cache_control", "web_search_options",
     "prompt_cache_key", "safety_identifier", "verbosity", "transcript", "expires_at"}
)
_TOKEN_FIELDS = ("prompt", "input")
_BASE64_PAYLOAD_KEYS = frozenset({"file_data", "data"})
_DATA_URL = re.compile(r"data:([\w.+\-]+/[\w.+\-]+)?((?:;[\w.+\-]+=[\w.+\-]+)*)(;base64)?,",
                       re.ASCII)
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")
_BIG_INT = 1_000_000  # ints of 7+ digits may be card, phone or account numbers


@dataclass(slots=True)
class BodyText:
    """The strings to scan, in body order, and why any part could not be scanned."""

    texts: list[str] = field(default_factory=list)
    unscannable: set[str] = field(default_factory=set)


def body_texts(body: Mapping[str, Any]) -> BodyText:
    out = BodyText()
    if not isinstance(body, Mapping):
        return out
    for key in _TOKEN_FIELDS:
        if _is_token_ids(body.get(key)):
            out.unscannable.add(TOKEN_IDS)
    _walk(body, None, out)
    return out


def _is_token_ids(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    first = value[0]
    return isinstance(first, int) or (isinstance(first, list) and bool(first))


def _walk(value: Any, key: str | None, out: BodyText) -> None:
    # Recursive: depth is bounded by the JSON parser (orjson refuses nesting deeper than 1024).
    if isinstance(value, str):
        _string(value, key, out)
    elif isinstance(value, Mapping):
        for child_key, child in value.items():
            if not isinstance(child_key, str):
                child_key = str(child_key)
            if child_key not in API_KEYS:
                out.texts.append(child_key)
            _walk(child, child_key, out)
    elif isinstance(value, list):
        for item in value:
            _walk(item, key, out)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _BIG_INT:
        out.texts.append(str(value))
    elif isinstance(value, float) and abs(value) >= _BIG_INT:
        out.texts.append(repr(value))


def _string(value: str, key: str | None, out: BodyText) -> None:
    if key in NON_TEXT_FIELDS and _ENUM_SHAPE.match(value):
        return
    if value.startswith("data:"):
        _data_url(value, out)
    elif key in _BASE64_PAYLOAD_KEYS and len(value) >= 64 and _looks_base64(value):
        _base64_payload(value, None, out)
    else:
        out.texts.append(value)


def _looks_base64(value: str) -> bool:
    return " " not in value[:64] and "\n" not in value[:64]


def _data_url(value: str, out: BodyText) -> None:
    header = _DATA_URL.match(value)
    if header is None:
        out.texts.append(value)  # not a data URL after all: plain text
        return
    media_type = (header.group(1) or "text/plain").lower()
    payload = value[header.end():]
    if header.group(3) is None:
        out.texts.append(unquote(payload, errors="replace"))
    else:
        _base64_payload(payload, media_type, out)
    if header.group(2):
        out.texts.append(header.group(2))  # parameters (";name=…") are client text too


def _base64_payload(payload: str, media_type: str | None, out: BodyText) -> None:
    """Image bytes are skipped (the media type, when given, must say image too); text is
    scanned; anything else is binary the node cannot read."""
    if (media_type is None or media_type.startswith("image/")) and _is_image(payload):
        return
    decoded = decode_base64_text(payload.strip())
    if decoded is None:
        out.unscannable.add(BINARY)
    else:
        out.texts.append(decoded)


def _is_image(payload: str) -> bool:
    head = payload[:24]
    try:
        raw = base64.b64decode(head[: len(head) - len(head) % 4], validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw.startswith(_IMAGE_MAGIC)
