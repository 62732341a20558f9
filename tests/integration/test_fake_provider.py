"""The fake provider over real sockets (httpx client): answers, recording, each fault kind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from spillgate.fakes.provider import FakeState, running_fake_provider
from tests.support import free_port, spawn

pytestmark = pytest.mark.integration

CHAT = {"model": "fake-gpt", "messages": [{"role": "user", "content": "hello fake world"}]}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
MESSAGE = {"model": "claude-x", "max_tokens": 50,
           "messages": [{"role": "user", "content": "hello fake world"}]}


def sse_data(text: str) -> list[Any]:
    lines = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else orjson.loads(line) for line in lines]


async def test_chat_completion_echoes_and_counts_words() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        r = await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "Fake reply to: hello fake world"
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] == 6  # "Fake reply to: hello fake world"


async def test_chat_stream_with_usage_chunk_then_done() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        r = await client.post(f"{fake.base_url}/chat/completions",
                              json={**CHAT, "stream": True,
                                    "stream_options": {"include_usage": True}})
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["prompt_tokens"] == 3
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == "Fake reply to: hello fake world"


async def test_tool_call_when_tools_given_and_user_asks() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        asked = await client.post(f"{fake.base_url}/chat/completions", json={
            **CHAT, "tools": [tool],
            "messages": [{"role": "user", "content": "please use lookup"}]})
        plain = await client.post(f"{fake.base_url}/chat/completions",
                                  json={**CHAT, "tools": [tool]})
    call = asked.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": '{"q":"fake"}'}
    assert "tool_calls" not in plain.json()["choices"][0]["message"]


async def test_completions_embeddings_and_models() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        comp = await client.post(f"{fake.base_url}/completions",
                                 json={"model": "m", "prompt": "once upon", "max_tokens": 2})
        emb = await client.post(f"{fake.base_url}/embeddings",
                                json={"model": "e", "input": ["a b", "c", "a b"]})
        models = await client.get(f"{fake.base_url}/models")
    assert comp.json()["choices"][0] == {"index": 0, "text": "Fake reply", "logprobs": None,
                                         "finish_reason": "length"}
    vectors = [d["embedding"] for d in emb.json()["data"]]
    assert vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(v * v for v in vectors[0]) - 1.0) < 1e-9
    assert [m["id"] for m in models.json()["data"]] == list(FakeState().models)


async def test_anthropic_messages_plain_and_stream_event_sequence() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        plain = await client.post(f"{fake.base_url}/messages", json=MESSAGE,
                                  headers=ANTHROPIC_HEADERS)
        streamed = await client.post(f"{fake.base_url}/messages", json={**MESSAGE, "stream": True},
                                     headers=ANTHROPIC_HEADERS)
    message = plain.json()
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": "Fake reply to: hello fake world"}]
    assert message["usage"]["input_tokens"] == 3
    names = [line[len("event: "):] for line in streamed.text.splitlines()
             if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert [e["type"] for e in sse_data(streamed.text)] == names


@pytest.mark.parametrize(("change", "status", "needle"), [
    ({"n": 1}, 400, "n: Extra inputs"),
    ({"max_tokens": None}, 400, "max_tokens"),
    ({"temperature": 1.5}, 400, "temperature"),
])
async def test_anthropic_refuses_what_the_real_api_refuses(
    change: dict[str, Any], status: int, needle: str
) -> None:
    body = {k: v for k, v in {**MESSAGE, **change}.items() if v is not None}
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        r = await client.post(f"{fake.base_url}/messages", json=body, headers=ANTHROPIC_HEADERS)
        unversioned = await client.post(f"{fake.base_url}/messages", json=MESSAGE,
                                        headers={"x-api-key": "k"})
    assert r.status_code == status and needle in r.json()["error"]["message"]
    assert unversioned.status_code == 400


async def test_requests_are_recorded_and_cleared_over_http() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        await client.post(f"{fake.base_url}/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS)
        recorded = (await client.get(f"{fake.root_url}/_fake/requests")).json()
        await client.delete(f"{fake.root_url}/_fake/requests")
        after = (await client.get(f"{fake.root_url}/_fake/requests")).json()
    assert recorded[0]["path"] == "/v1/messages" and recorded[0]["body"] == MESSAGE
    assert recorded[0]["headers"]["x-api-key"] == "k"
    assert after == [] and fake.requests == []


async def test_prompt_cache_reports_repeated_system_prompt_as_cached() -> None:
    body = {**MESSAGE, "system": "shared five word preamble"}
    async with running_fake_provider(state=FakeState(prompt_cache=True)) as fake, \
            httpx.AsyncClient() as client:
        first = await client.post(f"{fake.base_url}/messages", json=body, headers=ANTHROPIC_HEADERS)
        again = await client.post(f"{fake.base_url}/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert first.json()["usage"]["cache_creation_input_tokens"] == 4
    assert again.json()["usage"]["cache_read_input_tokens"] == 4
    assert again.json()["usage"]["input_tokens"] == 3


# ----------------------------------------------------------------------------------- faults

async def test_fault_latency_delays_the_answer() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"latency_ms": 300, "count": 1})
        start = time.perf_counter()
        await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
        delayed = time.perf_counter() - start
        r = await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
    assert delayed >= 0.3
    assert r.status_code == 200 and fake.state.faults.active() == []


async def test_fault_429_with_retry_after_in_each_format() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"status": 429, "retry_after_s": 7, "count": 2})
        openai = await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
        anthropic = await client.post(f"{fake.base_url}/messages", json=MESSAGE,
                                      headers=ANTHROPIC_HEADERS)
        recovered = await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
    assert openai.status_code == anthropic.status_code == 429
    assert openai.headers["retry-after"] == anthropic.headers["retry-after"] == "7"
    assert openai.json()["error"]["type"] == "rate_limit_error"
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert recovered.status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_fault_server_errors(status: int) -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"status": status, "count": 1})
        r = await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
    assert r.status_code == status and "retry-after" not in r.headers


async def test_fault_reset_drops_connection_without_answer() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"reset": True, "count": 1})
        with pytest.raises(httpx.TransportError):
            await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
        assert (await client.post(f"{fake.base_url}/chat/completions", json=CHAT)).is_success


@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
async def test_fault_cut_stream_sends_some_events_then_hangs_up(path: str) -> None:
    body = {**(MESSAGE if path == "/messages" else CHAT), "stream": True}
    received: list[str] = []
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"cut_after": 2, "count": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", fake.base_url + path, json=body,
                                     headers=ANTHROPIC_HEADERS) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        received.append(line)
    assert len(received) == 2
    assert not any("[DONE]" in line or "message_stop" in line for line in received)


async def test_fault_cut_plain_body_is_incomplete() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"cut_after": 0, "count": 1})
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{fake.base_url}/chat/completions", json=CHAT)


async def test_fault_trickle_spaces_events_and_ttft_delays_the_first() -> None:
    body = {**CHAT, "stream": True}
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        fake.set_faults({"ttft_ms": 300, "trickle_ms": 50, "count": 1})
        start = time.perf_counter()
        arrivals: list[float] = []
        async with client.stream("POST", f"{fake.base_url}/chat/completions", json=body) as r:
            headers_at = time.perf_counter() - start
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.perf_counter() - start)
    assert headers_at < arrivals[0]
    assert arrivals[0] >= 0.3
    # n events need n-1 gaps of at least 50 ms, however the client batches its reads.
    assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 1) - 0.001


async def test_faults_by_path_and_over_http() -> None:
    async with running_fake_provider() as fake, httpx.AsyncClient() as client:
        posted = await client.post(f"{fake.root_url}/_fake/faults",
                                   json={"status": 503, "path": "/v1/embeddings"})
        chat = await client.post(f"{fake.base_url}/chat/completions", json=CHAT)
        emb = await client.post(f"{fake.base_url}/embeddings", json={"input": "x"})
        emb_again = await client.post(f"{fake.base_url}/embeddings", json={"input": "x"})
        bad = await client.post(f"{fake.root_url}/_fake/faults", json={"explode": True})
        await client.delete(f"{fake.root_url}/_fake/faults")
        cleared = await client.post(f"{fake.base_url}/embeddings", json={"input": "x"})
    assert posted.json()["faults"][0]["status"] == 503
    assert chat.status_code == 200 and emb.status_code == emb_again.status_code == 503
    assert bad.status_code == 400 and cleared.status_code == 200


def test_runs_as_a_module(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with spawn(["-m", "spillgate.fakes.provider", "--port", str(port), "--latency-ms", "20"],
               tmp_path / "fake.log", url + "/v1", url + "/v1/models", timeout_s=20):
        r = httpx.post(url + "/v1/chat/completions", json=CHAT)
        faults = httpx.get(url + "/_fake/faults").json()["faults"]
    assert r.json()["choices"][0]["message"]["content"].startswith("Fake reply")
    assert faults[0]["latency_ms"] == 20
