"""Anthropic prompt-cache breakpoints survive the OpenAI → Anthropic translation, land on the
block Anthropic expects, and never reach an OpenAI-protocol upstream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.backends.anthropic_translate import to_anthropic_request
from spillgate.backends.prompt_cache import without_cache_control
from spillgate.costing.pricing import Price, cost
from spillgate.errors import InvalidRequest
from spillgate.fakes.provider_replies import anthropic_problem
from spillgate.tenancy.budgets import worst_case_cost

EPHEMERAL = {"type": "ephemeral"}
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def translate(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return to_anthropic_request({"messages": messages, "max_tokens": 8, **extra}, "claude")


def test_system_part_breakpoint_makes_system_a_block_list() -> None:
    out = translate([
        {"role": "system", "content": [
            {"type": "text", "text": "shared preamble", "cache_control": EPHEMERAL},
            {"type": "text", "text": "per-call tail"}]},
        {"role": "user", "content": "hi"}])
    assert out["system"] == [
        {"type": "text", "text": "shared preamble", "cache_control": EPHEMERAL},
        {"type": "text", "text": "per-call tail"}]


def test_without_breakpoints_system_stays_one_string() -> None:
    out = translate([{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
                     {"role": "user", "content": "hi"}])
    assert out["system"] == "a\n\nb"


def test_message_level_marker_goes_on_the_messages_last_block() -> None:
    out = translate([{"role": "user", "content": "long document", "cache_control": EPHEMERAL}])
    assert out["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "long document", "cache_control": EPHEMERAL}]}]


def test_tool_marker_and_tool_result_marker() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}},
              "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    out = translate([
        {"role": "user", "content": "call f"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "result", "cache_control": EPHEMERAL},
    ], tools=tools)
    assert out["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    result = out["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["cache_control"] == EPHEMERAL
    assert anthropic_problem(out, HEADERS) is None  # the fake checks Anthropic's rules


@pytest.mark.parametrize("bad", [{"type": "persistent"}, "ephemeral", {"type": "ephemeral",
                                                                        "ttl": "2d"}])
def test_malformed_marker_is_a_400_naming_the_field(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate([{"role": "user", "content": [{"type": "text", "text": "x",
                                                 "cache_control": bad}]}])
    assert caught.value.param == "messages[0].content[0].cache_control"


def test_a_fifth_breakpoint_is_refused_before_the_provider_sees_it() -> None:
    parts = [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(5)]
    with pytest.raises(InvalidRequest, match="at most 4"):
        translate([{"role": "user", "content": parts}])


_part = st.builds(lambda text, marked: {"type": "text", "text": text,
                                        **({"cache_control": EPHEMERAL} if marked else {})},
                  st.text(min_size=1, max_size=8).filter(str.strip), st.booleans())
_message = st.builds(lambda role, parts, marked: {
    "role": role, "content": parts, **({"cache_control": EPHEMERAL} if marked else {})},
    st.sampled_from(["system", "user", "assistant"]), st.lists(_part, min_size=1, max_size=3),
    st.booleans())


@given(st.lists(_message, min_size=1, max_size=4).filter(
    lambda ms: any(m["role"] == "user" for m in ms)))
def test_breakpoints_are_kept_or_refused_and_always_stripped_for_openai(
        messages: list[dict[str, Any]]) -> None:
    placed = sum(1 for m in messages for p in m["content"] if "cache_control" in p)
    placed += sum(1 for m in messages if "cache_control" in m
                  and not any("cache_control" in p for p in m["content"][-1:]))
    try:
        out = translate(messages)
    except InvalidRequest:
        assert placed > 4
    else:
        assert placed <= 4
        assert orjson.dumps(out).count(b"cache_control") == placed
        assert anthropic_problem(out, HEADERS) is None
    stripped = without_cache_control({"model": "m", "messages": messages})
    assert b"cache_control" not in orjson.dumps(stripped)


def test_stripping_leaves_an_unmarked_body_untouched() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert without_cache_control(body) is body


HAIKU = Price("anthropic/claude-3-5-haiku-latest", __import__("datetime").date(2024, 11, 4),
              input=Decimal("0.80"), cached_input=Decimal("0.08"), output=Decimal("4.00"),
              cache_write=Decimal("1.00"))


def test_cache_writes_reads_and_fresh_input_each_at_their_rate() -> None:
    # 1,000 prompt tokens: 600 read from cache, 300 written to it, 100 fresh; 50 output.
    by_hand = (Decimal(100) * Decimal("0.80") + 600 * Decimal("0.08") + 300 * Decimal("1.00")
               + 50 * Decimal("4.00")) / 1_000_000
    assert cost(HAIKU, 1000, 600, 50, cache_write_tokens=300) == by_hand
    with pytest.raises(ValueError):
        cost(HAIKU, 100, 60, 0, cache_write_tokens=41)


def test_a_reservation_bounds_a_prompt_that_is_all_cache_writes() -> None:
    reserved = worst_case_cost(1000, 10, HAIKU)
    assert reserved >= cost(HAIKU, 1000, 0, 10, cache_write_tokens=1000)
