"""OpenAI ⇄ Anthropic translation, checked against what the Anthropic API accepts and sends.

The fake provider's Anthropic side (request checks, replies) stands in for the real API, so
each round trip runs: OpenAI body → to_anthropic_request → (what Anthropic would validate and
answer) → from_anthropic_response → OpenAI body.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.backends.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    DROPPED_FIELDS,
    anthropic_usage,
    from_anthropic_response,
    openai_usage,
    to_anthropic_request,
    to_anthropic_response,
)
from spillgate.errors import InvalidRequest
from spillgate.fakes.provider_replies import (
    anthropic_problem,
    make_reply,
    openai_completion,
    prompt_from_anthropic,
    sample_arguments,
)

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}


def round_trip(body: dict[str, Any], cached: int = 0, written: int = 0) -> dict[str, Any]:
    """OpenAI body → Anthropic → fake Anthropic answer → OpenAI completion."""
    request = to_anthropic_request(body, "claude-test")
    assert anthropic_problem(request, HEADERS) is None, anthropic_problem(request, HEADERS)
    prompt = prompt_from_anthropic(request)
    reply = make_reply(prompt, 7)
    message = to_anthropic_response(
        openai_completion(reply, prompt, "msg_7", 0, cached), cache_creation_tokens=written)
    return from_anthropic_response(message, created=123)


def test_system_and_developer_messages_become_top_level_system() -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "developer", "content": [{"type": "text", "text": "No jokes."}]},
                         {"role": "user", "content": "hi"}], "max_tokens": 20}
    out = to_anthropic_request(body, "claude-test")
    assert out["system"] == "Be brief.\n\nNo jokes."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert out["model"] == "claude-test"


def test_multi_turn_keeps_order_and_merges_consecutive_same_role_turns() -> None:
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                         {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]}
    out = to_anthropic_request(body, "m")
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert [b["text"] for b in out["messages"][0]["content"]] == ["a", "b"]
    assert round_trip(body)["choices"][0]["message"]["content"] == "Fake reply to: d"


def test_image_parts_become_base64_or_url_sources() -> None:
    parts = [{"type": "text", "text": "what is this"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]
    out = to_anthropic_request({"messages": [{"role": "user", "content": parts}]}, "m")
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert blocks[2] == {"type": "image",
                         "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    assert anthropic_problem(out, HEADERS) is None


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
    {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
    {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
])
def test_unsupported_content_parts_are_refused(part: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_anthropic_request({"messages": [{"role": "user", "content": [part]}]}, "m")


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    out = to_anthropic_request({"messages": [{"role": "user", "content": "x"}],
                                "tools": [WEATHER], "tool_choice": choice}, "m")
    assert out["tool_choice"] == expected
    assert out["tools"] == [{"name": "get_weather", "description": "Current weather",
                             "input_schema": WEATHER["function"]["parameters"]}]


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    out = to_anthropic_request({"messages": [{"role": "user", "content": "x"}],
                                "tools": [WEATHER], "parallel_tool_calls": False}, "m")
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_call_round_trip_gives_openai_tool_calls_with_json_arguments() -> None:
    result = round_trip({"messages": [{"role": "user", "content": "use the tool for Paris"}],
                         "tools": [WEATHER]})
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    expected = sample_arguments(WEATHER["function"]["parameters"])
    assert orjson.loads(call["function"]["arguments"]) == expected
    assert call["id"].startswith("toolu_")


def test_tool_results_follow_their_tool_use_and_share_one_user_turn() -> None:
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": "get_weather", "arguments": f'{{"city": "c{i}"}}'}}
             for i in (1, 2)]
    body = {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "weather in c1 and c2?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
    ]}
    out = to_anthropic_request(body, "m")
    assistant, results = out["messages"][1], out["messages"][2]
    assert [b["input"] for b in assistant["content"]] == [{"city": "c1"}, {"city": "c2"}]
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == ["call_1", "call_2"]
    # Anthropic accepts it, and answers from the tool results rather than calling again.
    message = round_trip(body)["choices"][0]["message"]
    assert message["content"] == "Tool result: sunny rain"
    assert "tool_calls" not in message


def test_sampling_fields_are_mapped_and_openai_only_fields_dropped() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 33,
            "max_tokens": 99, "temperature": 1.7, "top_p": 0.5, "stop": "END", "stream": True,
            "user": "u-1", "n": 1, "presence_penalty": 0.2, "frequency_penalty": 0.1,
            "response_format": {"type": "json_object"}, "stream_options": {"include_usage": True},
            "logprobs": True, "top_logprobs": 2, "seed": 4, "logit_bias": {"1": 2}}
    out = to_anthropic_request(body, "m")
    assert out["max_tokens"] == 33
    assert out["temperature"] == 1.0  # Anthropic's range is 0..1
    assert (out["top_p"], out["stop_sequences"], out["stream"]) == (0.5, ["END"], True)
    assert out["metadata"] == {"user_id": "u-1"}
    assert not DROPPED_FIELDS.intersection(out) - {"metadata"}
    assert anthropic_problem(out, HEADERS) is None


def test_max_tokens_always_present() -> None:
    out = to_anthropic_request({"messages": [{"role": "user", "content": "x"}]}, "m")
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("body", [
    {"n": 2}, {"functions": [{"name": "f"}]}, {"tools": [{"type": "code_interpreter"}]},
    {"tool_choice": "sometimes", "tools": [WEATHER]},
])
def test_requests_anthropic_cannot_honour_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_anthropic_request({"messages": [{"role": "user", "content": "x"}], **body}, "m")


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("something_new", "stop"),
])
def test_stop_reason_mapping(stop_reason: str, finish: str) -> None:
    message = {"id": "msg_1", "model": "m", "content": [{"type": "text", "text": "hi"}],
               "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert from_anthropic_response(message, created=0)["choices"][0]["finish_reason"] == finish


def test_max_tokens_round_trip_reports_length() -> None:
    result = round_trip({"messages": [{"role": "user", "content": "one two three four"}],
                         "max_tokens": 2})
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 2


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    usage = openai_usage({"input_tokens": 10, "cache_read_input_tokens": 100,
                          "cache_creation_input_tokens": 20, "output_tokens": 5})
    assert usage == {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                     "prompt_tokens_details": {"cached_tokens": 100},
                     "cache_creation_input_tokens": 20}


def test_round_trip_usage_with_cached_tokens() -> None:
    system = "You are a helpful assistant with a long shared preamble"
    body = {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": "hello there"}]}
    words = len(system.split()) + 2
    result = round_trip(body, cached=len(system.split()))
    assert result["usage"]["prompt_tokens"] == words
    assert result["usage"]["prompt_tokens_details"]["cached_tokens"] == len(system.split())
    written = round_trip(body, written=len(system.split()))
    assert written["usage"]["prompt_tokens"] == words
    assert written["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000),
       st.integers(0, 10_000))
def test_usage_translation_is_invertible(plain: int, read: int, write: int, out: int) -> None:
    anthropic = {"input_tokens": plain, "cache_read_input_tokens": read,
                 "cache_creation_input_tokens": write, "output_tokens": out}
    assert anthropic_usage(openai_usage(anthropic), write) == anthropic
