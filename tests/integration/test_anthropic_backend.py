"""AnthropicBackend against the fake provider over real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from spillgate.backends.anthropic import ANTHROPIC_VERSION, AnthropicBackend
from spillgate.backends.base import UpstreamCall, UpstreamFailure
from spillgate.backends.http import Timeouts
from spillgate.errors import InvalidRequest, UpstreamError
from spillgate.fakes.provider import FakeProvider, FakeState, running_fake_provider
from spillgate.types import JSON

pytestmark = pytest.mark.integration

CALL = UpstreamCall(endpoint="chat/completions", request_id="r1",
                    upstream_model="claude-sonnet-test")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
SYSTEM = "You answer in one line"


def chat(text: str, **extra: Any) -> JSON:
    return {"model": "anthropic/claude", "max_tokens": 64, **extra,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]}


@asynccontextmanager
async def backend_and_fake(
    *, api_key: str = "sk-test", read_s: float = 5.0, prompt_cache: bool = False,
) -> AsyncIterator[tuple[AnthropicBackend, FakeProvider]]:
    async with running_fake_provider(state=FakeState(prompt_cache=prompt_cache)) as fake:
        backend = AnthropicBackend("anthropic", fake.root_url, api_key,
                                   timeouts=Timeouts(connect_s=2.0, read_s=read_s),
                                   max_connections=8, clock=lambda: 1234.0)
        try:
            yield backend, fake
        finally:
            await backend.aclose()


async def collect(backend: AnthropicBackend, body: JSON) -> list[JSON]:
    return [chunk async for chunk in backend.stream(CALL, body)]


async def test_complete_sends_anthropic_wire_format_and_returns_openai() -> None:
    async with backend_and_fake() as (backend, fake):
        result = await backend.complete(CALL, chat("hello there", n=1, seed=3,
                                                   stream_options={"include_usage": True}))
    sent = fake.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-test"
    assert sent["headers"]["anthropic-version"] == ANTHROPIC_VERSION
    assert sent["body"]["model"] == "claude-sonnet-test" and sent["body"]["system"] == SYSTEM
    assert not {"n", "seed", "stream_options", "stream"} & set(sent["body"])
    assert result["object"] == "chat.completion" and result["created"] == 1234
    assert result["choices"][0]["message"]["content"] == "Fake reply to: hello there"
    assert result["choices"][0]["finish_reason"] == "stop"
    prompt_words = len(SYSTEM.split()) + 2
    assert result["usage"]["prompt_tokens"] == prompt_words


async def test_cached_prompt_tokens_reach_openai_usage() -> None:
    async with backend_and_fake(prompt_cache=True) as (backend, _):
        first = await backend.complete(CALL, chat("hello there"))
        second = await backend.complete(CALL, chat("hello again"))
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == len(SYSTEM.split())
    assert second["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]


async def test_tool_call_conversation_over_two_turns() -> None:
    async with backend_and_fake() as (backend, _):
        first = await backend.complete(CALL, chat("use the tool for Oslo", tools=TOOLS))
        message = first["choices"][0]["message"]
        assert first["choices"][0]["finish_reason"] == "tool_calls"
        call = message["tool_calls"][0]
        assert orjson.loads(call["function"]["arguments"]) == {"city": "fake"}
        history = chat("use the tool for Oslo", tools=TOOLS)["messages"] + [
            message, {"role": "tool", "tool_call_id": call["id"], "content": "12 C, cloudy"}]
        second = await backend.complete(CALL, {"max_tokens": 64, "tools": TOOLS,
                                               "messages": history})
    assert second["choices"][0]["message"]["content"] == "Tool result: 12 C, cloudy"


async def test_stream_text_then_finish_then_usage() -> None:
    async with backend_and_fake() as (backend, _):
        chunks = await collect(backend, chat("stream me please", stream=True))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Fake reply to: stream me please"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(text.split())


async def test_stream_tool_call_fragments_reassemble() -> None:
    async with backend_and_fake() as (backend, _):
        chunks = await collect(backend, chat("call get_weather", tools=TOOLS, stream=True))
    calls = [tc for c in chunks if c["choices"]
             for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["index"] == 0
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert orjson.loads(arguments) == {"city": "fake"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert "tool_calls" in finishes


async def test_429_surfaces_retry_after() -> None:
    async with backend_and_fake() as (backend, fake):
        fake.set_faults({"status": 429, "retry_after_s": 2, "count": 2})
        with pytest.raises(UpstreamFailure) as plain:
            await backend.complete(CALL, chat("x"))
        with pytest.raises(UpstreamFailure) as streamed:
            await collect(backend, chat("x"))
    for info in (plain, streamed):
        assert info.value.status == 429 and info.value.retry_after_s == 2.0


@pytest.mark.parametrize("status", [500, 529])
async def test_server_errors_are_retryable_failures(status: int) -> None:
    async with backend_and_fake() as (backend, fake):
        fake.set_faults({"status": status, "count": 1})
        with pytest.raises(UpstreamFailure) as info:
            await backend.complete(CALL, chat("x"))
    assert info.value.upstream_status == status


async def test_non_retryable_errors_carry_the_upstream_message() -> None:
    orphan = {"max_tokens": 8, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_missing", "content": "result"}]}
    async with backend_and_fake() as (backend, _):
        with pytest.raises(InvalidRequest, match="unexpected tool_use_id"):
            await backend.complete(CALL, orphan)
        with pytest.raises(InvalidRequest, match="unexpected tool_use_id"):
            await collect(backend, orphan)
    async with backend_and_fake(api_key="") as (backend, _):
        with pytest.raises(UpstreamError, match="x-api-key"):
            await backend.complete(CALL, chat("x"))


async def test_connection_reset_is_a_failure() -> None:
    async with backend_and_fake() as (backend, fake):
        fake.set_faults({"reset": True, "count": 2})
        with pytest.raises(UpstreamFailure):
            await backend.complete(CALL, chat("x"))
        with pytest.raises(UpstreamFailure):
            await collect(backend, chat("x"))
        recovered = await backend.complete(CALL, chat("x"))
    assert recovered["choices"][0]["message"]["content"] == "Fake reply to: x"


@pytest.mark.parametrize("cut_after", [3, 99])  # 99: everything but message_stop
async def test_cut_stream_raises_instead_of_finishing(cut_after: int) -> None:
    received: list[JSON] = []
    async with backend_and_fake() as (backend, fake):
        fake.set_faults({"cut_after": cut_after, "count": 1})
        with pytest.raises(UpstreamFailure):
            async for chunk in backend.stream(CALL, chat("a fairly long answer please")):
                received.append(chunk)
    assert received, "the events before the cut reach the caller"
    assert not any("usage" in c for c in received)


async def test_read_timeout_is_a_504_failure() -> None:
    async with backend_and_fake(read_s=0.2) as (backend, fake):
        fake.set_faults({"latency_ms": 1000, "count": 1})
        with pytest.raises(UpstreamFailure) as info:
            await backend.complete(CALL, chat("x"))
    assert info.value.status == 504


@pytest.mark.parametrize("endpoint", ["completions", "embeddings"])
async def test_other_endpoints_are_refused_clearly(endpoint: Any) -> None:
    call = UpstreamCall(endpoint=endpoint, request_id="r", upstream_model="m")
    async with backend_and_fake() as (backend, fake):
        with pytest.raises(InvalidRequest, match="chat/completions only"):
            await backend.complete(call, {"prompt": "x"})
        with pytest.raises(InvalidRequest):
            await collect_call(backend, call)
    assert fake.requests == []


async def collect_call(backend: AnthropicBackend, call: UpstreamCall) -> list[JSON]:
    return [c async for c in backend.stream(call, {"prompt": "x"})]
