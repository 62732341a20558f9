"""Hypothesis strategies: valid request bodies with one sensitive value planted somewhere.

A planted value is a generated value of one class (card over the networks' IIN ranges and
Luhn, IBAN with computed mod-97 digits, SSN from the issued ranges, phone, email, secret),
behind the words a person writes before it ("card", "SSN", "phone" …), written in one
encoding (separators, Unicode forms, lowercase, percent/HTML/JSON escapes, base64, a `data:`
URL, a spelled-out email, split across two messages), at one position of a random valid body
(message content or part, unknown keys of a message or part, names, tool-call ids and
arguments, tool schemas, tool_choice, metadata keys and nested values, unknown top-level
fields at any depth, completions prompt/suffix, embeddings input, …).

Ground truth is the generator's: nothing here asks the detector.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from stdnum import iban, luhn

JSON = dict[str, Any]
WORDS = [
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "grove", "harbor", "island",
    "jungle", "kettle", "lantern", "meadow", "nectar", "orbit", "pepper", "quartz", "river",
    "saddle", "timber", "umber", "velvet", "willow", "yonder", "zephyr", "the", "a", "of",
    "and", "to", "in", "report", "summary", "please", "draft", "review", "plan", "notes"
]
FILLER = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
SMALL = st.integers(min_value=0, max_value=99_999)

# ---------------------------------------------------------------- values

_IINS = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2221", 16), ("2720", 16), ("34", 15),
         ("37", 15), ("36", 14), ("300", 14), ("3528", 16), ("3589", 19), ("1800", 15),
         ("2131", 15), ("6011", 16), ("65", 16), ("62", 19), ("5018", 12), ("6759", 19),
         ("2200", 16), ("81", 16)]
_BBAN = {"DE": 18, "NO": 11, "BE": 12, "DK": 14, "FI": 14, "AT": 16, "PL": 24,
         "CZ": 20, "SE": 20, "PT": 21, "HU": 24, "SK": 20}


@st.composite
def card(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from(_IINS))
    body = prefix + draw(st.text(string.digits, min_size=length - len(prefix) - 1,
                                 max_size=length - len(prefix) - 1))
    return body + luhn.calc_check_digit(body)


@st.composite
def iban_number(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(_BBAN)))
    size = _BBAN[country]
    bban = draw(st.text(string.digits, min_size=size, max_size=size))
    number = country + iban.calc_check_digits(country + "00" + bban) + bban
    # A few countries add a national check digit; draw again until it holds.
    return number if iban.is_valid(number) else draw(iban_number())


@st.composite
def ssn(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    group, serial = draw(st.integers(1, 99)), draw(st.integers(1, 9999))
    return f"{area:03d}{{sep}}{group:02d}{{sep}}{serial:04d}"


PHONES = st.sampled_from([
    "+1 415 555 2671", "+44 20 7946 0958", "+49 30 901820", "+33 1 42 68 53 00",
    "+81 3-1234-5678", "+55 11 91234-5678", "+61 2 9374 4000", "+91 98765 43210",
    "(415) 555-2671", "(555) 010-0000", "020 7946 0958", "030 901820", "0612345678",
    "912 34 56 78", "06-12345678",
])
EMAILS = st.builds(
    lambda user, dot, host, tld: f"{user}{dot}@{host}.{tld}",
    st.text(string.ascii_lowercase, min_size=2, max_size=8),
    st.sampled_from(["", ".k", "_9", "+tag"]),
    # "x at the dot com" is read as prose by design (sensitivity_email.py): no host "the".
    st.text(string.ascii_lowercase, min_size=3, max_size=9).filter(lambda h: h != "the"),
    st.sampled_from(["com", "org", "net", "de", "io", "co.uk"]),
)
SECRETS = st.one_of(
    st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16).map(
        lambda s: "AKIA" + s),
    st.text(string.ascii_letters + string.digits, min_size=36, max_size=36).map(
        lambda s: "ghp_" + s),
    st.text(string.ascii_letters + string.digits, min_size=30, max_size=30).map(
        lambda s: "sk-proj-" + s + "4"),
)


@dataclass(frozen=True)
class Value:
    cls: str
    label: str  # the words before it, as a person writes them
    raw: str  # the value as usually written
    digits: str | None  # for digit values: the bare digits, to regroup


@st.composite
def value(draw: st.DrawFn) -> Value:
    cls = draw(st.sampled_from(["payment_card", "iban", "us_ssn", "phone", "email", "secret"]))
    if cls == "payment_card":
        number = draw(card())
        return Value(cls, draw(st.sampled_from(["card", "my card is", "Kreditkarte"])),
                     number, number)
    if cls == "iban":
        number = draw(iban_number())
        return Value(cls, draw(st.sampled_from(["IBAN", "wire to", "konto"])), number, None)
    if cls == "us_ssn":
        shape = draw(ssn())
        return Value(cls, draw(st.sampled_from(["SSN", "social security number", "SSN:"])),
                     shape.format(sep="-"), shape.format(sep=""))
    if cls == "phone":
        return Value(cls, draw(st.sampled_from(["phone", "call me on", "tel."])),
                     draw(PHONES), None)
    if cls == "email":
        return Value(cls, draw(st.sampled_from(["mail", "write to", "contact"])),
                     draw(EMAILS), None)
    return Value(cls, draw(st.sampled_from(["token", "export KEY=", "key"])),
                 draw(SECRETS), None)


# ---------------------------------------------------------------- encodings

def _groups(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _wide(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


WHOLE: dict[str, Callable[[str], str]] = {
    "plain": lambda s: s,
    "percent": lambda s: quote(s, safe=""),
    "html_entities": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "json_escapes": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "base64": _b64,
    "fullwidth": _wide,
    "nbsp": lambda s: s.replace(" ", "\u00a0"),
}
DIGIT_SEPARATORS = ["\u00a0", "\u202f", ".", "/", "  ", "\u200b", " ", "-", "\u2009"]


@st.composite
def written(draw: st.DrawFn, v: Value) -> tuple[str, str]:
    """(encoding name, the labelled value as written)."""
    raw = v.raw
    kind = draw(st.sampled_from(["whole", "whole", "digits", "special"]))
    if kind == "digits" and v.cls == "payment_card" and v.digits:
        raw = _groups(v.digits, draw(st.sampled_from(DIGIT_SEPARATORS)))
    elif kind == "digits" and v.cls == "us_ssn" and v.digits:
        raw = v.digits  # no separator: the label says SSN
    elif kind == "special" and v.cls == "iban":
        raw = _groups(v.raw, " ").lower()
    elif kind == "special" and v.cls == "email":
        local, domain = v.raw.split("@")
        raw = draw(st.sampled_from([
            f"{local} at {domain.replace('.', ' dot ')}",
            f"{local} [at] {domain.replace('.', ' [dot] ')}",
            f"{local}@{domain.replace('.', chr(0x200B) + '.', 1)}",
            f"{local}\uff20{domain}",
        ]))
    encoding = draw(st.sampled_from(sorted(WHOLE)))
    return f"{kind}/{encoding}", WHOLE[encoding](f"{v.label} {raw}")


# ---------------------------------------------------------------- bodies and positions

@dataclass
class Planted:
    endpoint: str
    model: str
    body: JSON
    where: str
    encoding: str
    cls: str


def _insert(draw: st.DrawFn, filler: str, text: str) -> str:
    cut = draw(st.integers(0, len(filler)))
    return f"{filler[:cut]} {text} {filler[cut:]}"


def _chat_body(draw: st.DrawFn) -> JSON:
    turns = draw(st.integers(1, 4))
    messages: list[JSON] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(FILLER)})
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": draw(FILLER)})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": draw(FILLER)})
    return {"messages": messages, "max_tokens": draw(st.integers(1, 64))}


def _tool(name: str, description: str, default: str) -> JSON:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {"q": {"type": "string",
                                                              "description": default}}}}}


# Each position writes `text` (the written value) into `body`; `draw` chooses offsets.
Position = Callable[[st.DrawFn, JSON, str], None]


def _last_user(body: JSON) -> JSON:
    return next(m for m in reversed(body["messages"]) if m["role"] == "user")


def _content(d: st.DrawFn, b: JSON, t: str) -> None:
    message = d(st.sampled_from(b["messages"]))
    message["content"] = _insert(d, message["content"], t)


def _part(d: st.DrawFn, b: JSON, t: str) -> None:
    message = _last_user(b)
    message["content"] = [{"type": "text", "text": d(FILLER)},
                          {"type": "text", "text": _insert(d, d(FILLER), t)}]


def _part_unknown_key(d: st.DrawFn, b: JSON, t: str) -> None:
    _last_user(b)["content"] = [{"type": "text", "text": d(FILLER), "x_note": t}]


def _message_unknown_key(d: st.DrawFn, b: JSON, t: str) -> None:
    d(st.sampled_from(b["messages"]))["x_meta"] = {"note": t}


def _name(d: st.DrawFn, b: JSON, t: str) -> None:
    _last_user(b)["name"] = t


def _tool_exchange(d: st.DrawFn, b: JSON, t: str) -> None:
    spot = d(st.sampled_from(["id", "name", "arguments", "result"]))
    call_id = t if spot == "id" else "call_1"
    args = json.dumps({"q": t}) if spot == "arguments" else json.dumps({"q": d(FILLER)})
    name = t if spot == "name" else "lookup"
    b["tools"] = [_tool(name, "look things up", "query")]
    b["messages"][-1:-1] = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id,
         "content": t if spot == "result" else d(FILLER)},
    ]


def _tool_definition(d: st.DrawFn, b: JSON, t: str) -> None:
    spot = d(st.sampled_from(["description", "schema"]))
    b["tools"] = [_tool("lookup", t if spot == "description" else "find",
                        t if spot == "schema" else "query")]


def _tool_choice(d: st.DrawFn, b: JSON, t: str) -> None:
    b["tools"] = [_tool("lookup", "find", "query")]
    b["tool_choice"] = {"type": "function", "function": {"name": t}}


def _metadata(d: st.DrawFn, b: JSON, t: str) -> None:
    spot = d(st.sampled_from(["value", "key", "nested"]))
    b["metadata"] = {"value": {"project": t}, "key": {t: "x"},
                     "nested": {"a": {"b": [d(FILLER), t]}}}[spot]


def _unknown_field(d: st.DrawFn, b: JSON, t: str) -> None:
    field = d(st.sampled_from(["extra_body", "prompt_cache_key", "web_search_options",
                               "x_custom", "safety_identifier"]))
    depth = d(st.integers(0, 3))
    value: Any = t
    for _ in range(depth):
        value = {d(st.sampled_from(WORDS)): value}
    b[field] = value


def _unknown_key(d: st.DrawFn, b: JSON, t: str) -> None:
    b[t] = d(FILLER)


def _user(d: st.DrawFn, b: JSON, t: str) -> None:
    b["user"] = t


def _data_url(d: st.DrawFn, b: JSON, t: str) -> None:
    url = "data:text/plain;base64," + _b64(t) if d(st.booleans()) else "data:," + quote(t)
    _last_user(b)["content"] = [{"type": "text", "text": d(FILLER)},
                                {"type": "image_url", "image_url": {"url": url}}]


def _file_name(d: st.DrawFn, b: JSON, t: str) -> None:
    _last_user(b)["content"] = [{"type": "text", "text": d(FILLER)},
                                {"type": "file", "file": {"filename": t, "file_id": "file-1"}}]


def _audio_transcript(d: st.DrawFn, b: JSON, t: str) -> None:
    b["messages"][-1:-1] = [{"role": "assistant", "content": None,
                             "audio": {"id": "audio_1", "transcript": t}}]


def _split(d: st.DrawFn, b: JSON, t: str) -> None:
    cut = d(st.integers(1, max(1, len(t) - 1)))
    b["messages"][-1:] = [{"role": "user", "content": d(FILLER) + " " + t[:cut]},
                          {"role": "user", "content": t[cut:] + " " + d(FILLER)}]


CHAT_POSITIONS: dict[str, Position] = {
    "content": _content, "part": _part, "part_unknown_key": _part_unknown_key,
    "message_unknown_key": _message_unknown_key, "name": _name, "tool_exchange": _tool_exchange,
    "tool_definition": _tool_definition, "tool_choice": _tool_choice, "metadata": _metadata,
    "unknown_field": _unknown_field, "unknown_key": _unknown_key, "user": _user,
    "data_url": _data_url, "file_name": _file_name, "audio_transcript": _audio_transcript,
    "split_messages": _split,
}
# Positions the Anthropic translation carries (others are refused or dropped before sending,
# but a body is scanned whole either way, so they are planted too).
ANTHROPIC_POSITIONS = CHAT_POSITIONS


def _prompt(d: st.DrawFn, b: JSON, t: str) -> None:
    key = "prompt" if "prompt" in b else "input"
    if d(st.booleans()):
        b[key] = _insert(d, d(FILLER), t)
    else:
        b[key] = [d(FILLER), _insert(d, d(FILLER), t)]


def _suffix(d: st.DrawFn, b: JSON, t: str) -> None:
    b["suffix"] = t


TEXT_POSITIONS: dict[str, Position] = {
    "prompt_or_input": _prompt, "metadata": _metadata, "unknown_field": _unknown_field,
    "unknown_key": _unknown_key, "user": _user,
}


@st.composite
def planted(draw: st.DrawFn, wire: str) -> Planted:
    """wire: "openai_chat", "anthropic_chat" or "openai_text" (completions + embeddings)."""
    v = draw(value())
    encoding, text = draw(written(v))
    if wire == "openai_text":
        endpoint = draw(st.sampled_from(["completions", "embeddings"]))
        body: JSON = {"prompt": draw(FILLER)} if endpoint == "completions" else {
            "input": draw(FILLER)}
        positions = dict(TEXT_POSITIONS)
        if endpoint == "completions":
            positions["suffix"] = _suffix
    else:
        endpoint, body, positions = "chat/completions", _chat_body(draw), CHAT_POSITIONS
    where = draw(st.sampled_from(sorted(positions)))
    positions[where](draw, body, text)
    model = "auto-claude" if wire == "anthropic_chat" else "auto"
    return Planted(endpoint, model, {"model": model, **body}, where, encoding, v.cls)


@st.composite
def clean(draw: st.DrawFn, wire: str) -> tuple[str, JSON]:
    """A body of the same shapes with filler only: the node must spill it."""
    if wire == "openai_text":
        return "completions", {"model": "auto", "prompt": draw(FILLER), "max_tokens": 8}
    body = _chat_body(draw)
    if draw(st.booleans()):
        body["metadata"] = {"project": draw(FILLER)}
    return "chat/completions", {
        "model": "auto-claude" if wire == "anthropic_chat" else "auto", **body}
