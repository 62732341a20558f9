"""Anthropic SSE → OpenAI chunks, on an event sequence shaped like the real API's."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from spillgate.backends.anthropic_stream import AnthropicStreamTranslator, parse_sse_data
from spillgate.backends.base import UpstreamFailure

# A text block, a ping, then a tool_use block streamed as input_json_delta fragments, as
# Anthropic's streaming documentation shows them (event: lines included).
RECORDED = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\", \\"unit\\": \\"fahrenheit\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501 (wire text, kept as sent)


def events(raw: bytes) -> list[dict[str, Any]]:
    parsed = [parse_sse_data(line) for line in raw.splitlines(keepends=True)]
    return [e for e in parsed if e is not None]


def translate(raw: bytes, include_usage: bool = True) -> tuple[list[dict[str, Any]], bool]:
    translator = AnthropicStreamTranslator(model="m", created=5, include_usage=include_usage)
    chunks = [c for e in events(raw) for c in translator.feed(e)]
    return chunks, translator.done


def test_recorded_stream_becomes_openai_chunks() -> None:
    chunks, done = translate(RECORDED)
    assert done
    assert all(c["object"] == "chat.completion.chunk" and c["created"] == 5 for c in chunks)
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Okay, let's check the weather."
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert {tc["index"] for tc in calls} == {0}  # block 1 is the first tool call
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]


def test_usage_chunk_comes_last_with_cache_reads_in_prompt_tokens() -> None:
    chunks, _ = translate(RECORDED)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 472 + 1024, "completion_tokens": 89,
                                   "total_tokens": 472 + 1024 + 89,
                                   "prompt_tokens_details": {"cached_tokens": 1024}}


def test_no_usage_chunk_unless_asked() -> None:
    chunks, _ = translate(RECORDED, include_usage=False)
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_two_tool_calls_are_numbered_among_tool_calls() -> None:
    translator = AnthropicStreamTranslator(model="m", created=0, include_usage=False)
    translator.feed({"type": "message_start", "message": {"id": "a", "usage": {}}})
    indices = []
    for block in (1, 2):
        start = {"type": "content_block_start", "index": block,
                 "content_block": {"type": "tool_use", "id": f"t{block}", "name": "f"}}
        delta = {"type": "content_block_delta", "index": block,
                 "delta": {"type": "input_json_delta", "partial_json": "{}"}}
        for chunk in translator.feed(start) + translator.feed(delta):
            indices += [tc["index"] for tc in chunk["choices"][0]["delta"]["tool_calls"]]
    assert indices == [0, 0, 1, 1]


def test_thinking_and_unknown_events_are_skipped() -> None:
    translator = AnthropicStreamTranslator(model="m", created=0, include_usage=False)
    translator.feed({"type": "message_start", "message": {"id": "a", "usage": {}}})
    skipped: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "x"}},
        {"type": "some_future_event"},
        {"type": "ping"},
    ]
    assert [translator.feed(e) for e in skipped] == [[]] * len(skipped)


def test_error_event_mid_stream_raises_upstream_failure() -> None:
    translator = AnthropicStreamTranslator(model="m", created=0, include_usage=True)
    recorded = events(RECORDED)
    for event in recorded[:4]:
        translator.feed(event)
    with pytest.raises(UpstreamFailure) as info:
        translator.feed({"type": "error",
                         "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert info.value.status == 503
    assert "Overloaded" in info.value.message


@pytest.mark.parametrize("keep", [0, 3, 12])  # 12: all but message_stop
def test_stream_without_message_stop_is_not_a_clean_finish(keep: int) -> None:
    translator = AnthropicStreamTranslator(model="m", created=0, include_usage=True)
    recorded = events(RECORDED)
    assert recorded[-1]["type"] == "message_stop" and keep < len(recorded)
    chunks = [c for e in recorded[:keep] for c in translator.feed(e)]
    assert not any(c.get("usage") for c in chunks)
    with pytest.raises(UpstreamFailure, match="ended early"):
        translator.finish()


def test_invalid_data_line_raises() -> None:
    with pytest.raises(UpstreamFailure):
        parse_sse_data(b"data: {not json\n")
    assert parse_sse_data(b"event: ping\n") is None
    assert parse_sse_data(b"\n") is None
