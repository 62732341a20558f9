"""Malformed input in the fields adapters translate is the client's 400, naming the field;
JSON nested too deep is refused before any translation (issue 10, scope 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.errors import InvalidRequest
from spillgate.protocol import admit
from spillgate.settings import ServerSettings
from spillgate.shapes import MAX_DEPTH, check_depth
from tests.harness import Harness, harness
from tests.unit.test_request_exits import assert_clean, assert_openai_error

LIMITS = ServerSettings()
CLAUDE = "anthropic/claude-3-5-haiku-latest"
USER = [{"role": "user", "content": "hi"}]
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path) as built:
        yield built


def nested(levels: int) -> Any:
    """`levels` objects inside one another."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": ["x"]}, "tools.0"),
    ({"stop": 5}, "stop"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": "zzz"}]}, "messages.1.tool_calls"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [{"id": "c1"}]}]},
     "messages.1.tool_calls.0.function"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages.0.content.0"),
    ({"tools": [FN], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [FN], "tool_choice": {"type": "function", "function": "f"}},
     "tool_choice.function"),
    ({"tools": [{"type": "function"}]}, "tools.0"),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools.0.function.name"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
])
async def test_malformed_translated_fields_are_a_400_naming_the_field(
        h: Harness, extra: dict[str, Any], param: str) -> None:
    for model in (CLAUDE, "auto"):  # the Anthropic translation and the OpenAI wire alike
        body = {"model": model, "messages": USER, **extra}
        error = assert_openai_error(await h.post(body), 400)
        assert error["param"] == param, error
    assert h.fallback.calls == [] and h.local.calls == []  # refused before any backend
    await assert_clean(h)


@pytest.mark.parametrize("body", [
    {"model": "auto", "messages": USER, "unknown_field": nested(300)},
    {"model": "auto", "messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": nested(300)}}]},
    {"model": CLAUDE, "messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": nested(300)}}]},
])
async def test_bodies_nested_300_deep_are_refused_before_translation(
        h: Harness, body: dict[str, Any]) -> None:
    error = assert_openai_error(await h.post(body), 400)
    assert error["code"] == "nesting_too_deep"
    await assert_clean(h)


async def test_well_formed_translated_fields_pass_through_untouched(h: Harness) -> None:
    body = {
        "model": CLAUDE, "stop": ["END", "STOP"], "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "d",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {
                "type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "found"},
        ],
    }
    reply = await h.post(body)
    assert reply.status_code == 200, reply.text
    sent = h.fallback.calls[0]
    assert {k: sent[k] for k in body if k != "model"} == {k: v for k, v in body.items()
                                                          if k != "model"}


def _depth_body(levels: int, wrap_in_list: bool) -> bytes:
    """A chat body whose `extra` field holds `levels` containers nested (the body itself is
    one more), built as text so the count is independent of the code under test."""
    opener, closer = ("[", "]") if wrap_in_list else ('{"a":', "}")
    inner = opener * levels + "1" * (not wrap_in_list) + closer * levels
    return b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "extra": ' + \
        inner.encode() + b"}"


@given(levels=st.integers(min_value=1, max_value=3 * MAX_DEPTH), lists=st.booleans())
def test_depth_limit_counts_every_container(levels: int, lists: bool) -> None:
    raw = _depth_body(levels, lists)
    assert orjson.loads(raw)  # valid JSON at every depth tried
    if levels + 1 <= MAX_DEPTH:  # the body object is the first level
        admit("chat/completions", raw, LIMITS)
    else:
        with pytest.raises(InvalidRequest) as caught:
            admit("chat/completions", raw, LIMITS)
        assert caught.value.param == "extra" and caught.value.code == "nesting_too_deep"


def test_depth_limit_is_iterative() -> None:
    with pytest.raises(InvalidRequest):
        check_depth({"a": nested(5000)})  # far past Python's recursion limit: no crash


@pytest.mark.parametrize("extra", [{"stream_options": 1}, {"stream": True},
                                   {"stream_options": {"include_usage": "maybe"}}])
async def test_embeddings_stream_fields_are_400s(h: Harness, extra: dict[str, Any]) -> None:
    """Found by the fuzz test: `stream_options: 1` on /v1/embeddings was a 500."""
    reply = await h.post({"model": "auto", "input": "hi", **extra}, path="/v1/embeddings")
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] in ("stream", "stream_options",
                                              "stream_options.include_usage")
