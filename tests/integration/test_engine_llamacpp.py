"""Our llama.cpp engine as a real process with the bundled SmolLM2 model, over raw HTTP and the
official OpenAI SDK: OpenAI shapes, errors, concurrency, the bounded queue and disconnects."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Proc, bundled_gguf, free_port, spawn

pytestmark = pytest.mark.integration

MODEL = "smollm2"
LONG_PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4, 5,"


def _small_engine(tmp_path_factory: pytest.TempPathFactory, name: str, max_queue: int,
                  ) -> contextlib.AbstractContextManager[Proc]:
    """An engine with a single decode slot and `max_queue` queue places."""
    port = free_port()
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", MODEL, "--port", str(port), "--max-batch", "1",
            "--max-queue", str(max_queue), "--n-ctx", "512"]
    log = Path(tmp_path_factory.mktemp(name)) / "engine.log"
    return spawn(argv, log, f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/health")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One slot and one queue place, to fill its queue on purpose."""
    with _small_engine(tmp_path_factory, "tiny", max_queue=1) as proc:
        yield proc


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def events(lines: list[str]) -> list[Any]:
    """SSE `data:` payloads in order; `[DONE]` stays a string."""
    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def gauge(engine: Proc, name: str) -> float:
    text = httpx.get(engine.base_url.removesuffix("/v1") + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} missing from /metrics")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code


def test_models_and_health(engine: Proc) -> None:
    listing = httpx.get(engine.base_url + "/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [MODEL]
    assert listing["data"][0]["object"] == "model"
    assert httpx.get(engine.base_url.removesuffix("/v1") + "/health").status_code == 200


def test_chat_plain_usage_and_length(engine: Proc) -> None:
    body = chat("Write a long story about a dragon.", max_tokens=4, temperature=0)
    reply = httpx.post(engine.base_url + "/chat/completions", json=body, timeout=30).json()
    assert reply["id"].startswith("chatcmpl-")
    assert reply["object"] == "chat.completion"
    assert reply["model"] == MODEL
    assert isinstance(reply["created"], int)
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    usage = reply["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == 4


def test_a_plain_answer_reaches_the_gateway_in_one_segment(engine: Proc) -> None:
    """The engine's server writes a plain answer's head and body together, so the gateway's
    client pool reads it in one read (one wake-up), not two (spillgate.held_head)."""
    body = orjson.dumps(chat("Say hi.", max_tokens=2, temperature=0))
    port = int(engine.base_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: engine\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(body), body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"chat.completion"' in answer
    assert struct.unpack_from("I", info, 152)[0] == 1  # tcpi_data_segs_in: one segment


def test_max_completion_tokens_and_seeded_sampling(engine: Proc) -> None:
    body = chat("Name a color.", max_completion_tokens=6, temperature=0.8, top_p=0.9, seed=7)
    first = httpx.post(engine.base_url + "/chat/completions", json=body, timeout=30).json()
    again = httpx.post(engine.base_url + "/chat/completions", json=body, timeout=30).json()
    assert first["usage"]["completion_tokens"] <= 6
    assert first["choices"][0]["message"] == again["choices"][0]["message"]


def test_chat_stream_with_usage(engine: Proc) -> None:
    body = chat("Say hello.", max_tokens=12, stream=True,
                stream_options={"include_usage": True})
    with httpx.stream("POST", engine.base_url + "/chat/completions", json=body,
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        got = events(list(response.iter_lines()))
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *deltas, final, usage_chunk = chunks
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in deltas)
    assert text.strip()
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completions_plain_and_stream(engine: Proc) -> None:
    body = {"model": MODEL, "prompt": "The sky is", "max_tokens": 5, "temperature": 0}
    reply = httpx.post(engine.base_url + "/completions", json=body, timeout=30).json()
    assert reply["id"].startswith("cmpl-")
    assert reply["object"] == "text_completion"
    assert reply["usage"]["completion_tokens"] <= 5
    with httpx.stream("POST", engine.base_url + "/completions", json={**body, "stream": True},
                      timeout=30) as response:
        got = events(list(response.iter_lines()))
    assert got[-1] == "[DONE]"
    streamed = "".join(c["choices"][0]["text"] for c in got[:-1])
    assert streamed == reply["choices"][0]["text"]  # greedy: the same text either way
    assert got[-2]["choices"][0]["finish_reason"] == reply["choices"][0]["finish_reason"]


def test_stop_string_is_honoured(engine: Proc) -> None:
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 40, "temperature": 0}
    free = httpx.post(engine.base_url + "/completions", json=body, timeout=30).json()
    text = free["choices"][0]["text"]
    stop = text[len(text) // 2:][:2]
    cut = httpx.post(engine.base_url + "/completions", json={**body, "stop": [stop]},
                     timeout=30).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == text[: text.index(stop)]


def test_openai_sdk(engine: Proc) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": "Hi"}], max_tokens=5)
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 5
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 5
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[
            {"role": "user", "content": "Hi"}])
    client.close()


async def test_concurrent_requests_all_complete(engine: Proc) -> None:
    async with httpx.AsyncClient(base_url=engine.base_url, timeout=60) as client:
        body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 24, "temperature": 0}
        replies = await asyncio.gather(*(
            client.post("/completions", json=body) for _ in range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    texts = {r.json()["choices"][0]["text"] for r in replies}
    assert len(texts) == 1  # batched greedy decoding gives each sequence the same answer
    assert all(r.json()["choices"][0]["finish_reason"] in ("stop", "length") for r in replies)


async def test_full_queue_answers_429_and_keeps_the_others(tiny: Proc) -> None:
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 48, "temperature": 0}
    async with httpx.AsyncClient(base_url=tiny.base_url, timeout=60) as client:
        replies = await asyncio.gather(*(client.post("/completions", json=body)
                                         for _ in range(5)))
    refused = [r for r in replies if r.status_code == 429]
    served = [r for r in replies if r.status_code == 200]
    assert refused
    assert 1 <= len(served) <= 2  # one slot + one queue place
    assert len(refused) + len(served) == 5
    for response in refused:
        assert_error(response, 429, "engine_queue_full")
        assert int(response.headers["retry-after"]) >= 1
    assert all(r.json()["choices"][0]["finish_reason"] for r in served)


def test_plain_request_disconnect_frees_the_slot_and_sigterm_exits(tiny: Proc) -> None:
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 400, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(tiny.base_url + "/completions", json=body, timeout=1.0)
    deadline = time.monotonic() + 5
    while gauge(tiny, "spillgate_engine_requests_running") != 0:
        assert time.monotonic() < deadline, "the abandoned request kept its slot"
        time.sleep(0.05)
    tiny.popen.send_signal(signal.SIGTERM)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done: -15 is a clean exit too.
    assert tiny.popen.wait(timeout=10) in (0, -signal.SIGTERM)


def test_error_shapes(engine: Proc) -> None:
    url = engine.base_url + "/chat/completions"
    assert_error(httpx.post(url, content=b'{"model": "smollm2", "mess'), 400, "invalid_json")
    invalid = httpx.post(url, json=chat("Hi", temperature=5))
    assert_error(invalid, 400)
    assert invalid.json()["error"]["param"] == "temperature"
    assert_error(httpx.post(url, json={"model": MODEL}), 400)
    assert_error(httpx.post(url, json=chat("Hi", n=2)), 400, "unsupported_parameter")
    assert_error(httpx.post(url, json={**chat("Hi"), "model": "gpt-9"}), 404, "model_not_found")
    too_long = chat("hello " * 3000, max_tokens=1)
    assert_error(httpx.post(url, json=too_long), 400, "context_length_exceeded")
    embeddings = httpx.post(engine.base_url + "/embeddings", json={"model": MODEL, "input": "x"})
    assert_error(embeddings, 400, "embeddings_not_supported")


def test_disconnect_mid_stream_frees_the_slot(engine: Proc) -> None:
    aborted_before = gauge(engine, "spillgate_engine_requests_aborted_total")
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 1500, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", engine.base_url + "/completions", json=body,
                      timeout=30) as response:
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False)]
        assert received
        assert gauge(engine, "spillgate_engine_requests_running") == 1
    deadline = time.monotonic() + 5
    while gauge(engine, "spillgate_engine_requests_running") != 0:
        assert time.monotonic() < deadline, "the disconnected sequence kept its slot"
        time.sleep(0.05)
    assert gauge(engine, "spillgate_engine_requests_aborted_total") == aborted_before + 1


def test_metrics_count_tokens(engine: Proc) -> None:
    before = gauge(engine, "spillgate_engine_generation_tokens_total")
    prompt_before = gauge(engine, "spillgate_engine_prompt_tokens_total")
    ttft_before = gauge(engine, "spillgate_engine_time_to_first_token_seconds_count")
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 3, "temperature": 0}
    usage = httpx.post(engine.base_url + "/completions", json=body, timeout=30).json()["usage"]
    assert gauge(engine, "spillgate_engine_generation_tokens_total") == (
        before + usage["completion_tokens"])
    assert gauge(engine, "spillgate_engine_prompt_tokens_total") == (
        prompt_before + usage["prompt_tokens"])
    assert gauge(engine, "spillgate_engine_time_to_first_token_seconds_count") == ttft_before + 1
    assert gauge(engine, "spillgate_engine_requests_waiting") == 0
    assert gauge(engine, "spillgate_engine_queue_capacity") > 0


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One slot and room to queue, to watch the admission order."""
    with _small_engine(tmp_path_factory, "single", max_queue=8) as proc:
        yield proc


async def test_urgent_priority_is_admitted_before_earlier_arrivals(single: Proc) -> None:
    finished: list[str] = []

    async def ask(client: httpx.AsyncClient, name: str, max_tokens: int, **extra: Any) -> None:
        body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": max_tokens,
                "temperature": 0, **extra}
        response = await client.post("/completions", json=body)
        assert response.status_code == 200, response.text
        finished.append(name)

    async with httpx.AsyncClient(base_url=single.base_url, timeout=60) as client:
        tasks = [asyncio.create_task(ask(client, "first", 64))]
        for _ in range(500):  # until the first request holds the only slot
            if gauge(single, "spillgate_engine_requests_running") >= 1:
                break
            await asyncio.sleep(0.02)
        for name, extra in (("b", {}), ("c", {"priority": 0}), ("urgent", {"priority": -1})):
            tasks.append(asyncio.create_task(ask(client, name, 4, **extra)))
            await asyncio.sleep(0.1)  # arrival order b, c, urgent
        assert gauge(single, "spillgate_engine_requests_waiting") == 3
        await asyncio.gather(*tasks)
    assert finished == ["first", "urgent", "b", "c"]


def test_a_repeated_prompt_reuses_the_slots_cells_and_answers_alike(single: Proc) -> None:
    """With one slot, the second of two identical greedy requests finds all but the last
    prompt token in the slot's KV cache (the last is computed again for its logits), and
    answers exactly as the first did."""
    body = chat("Name three colours of the rainbow.", max_tokens=16, temperature=0)

    def ask() -> tuple[str, int, int]:
        reply = httpx.post(single.base_url + "/chat/completions", json=body, timeout=60).json()
        usage = reply["usage"]
        return (reply["choices"][0]["message"]["content"], usage["prompt_tokens"],
                usage["prompt_tokens_details"]["cached_tokens"])

    first, prompt_tokens, _ = ask()
    cached_before = gauge(single, "spillgate_engine_prompt_tokens_cached_total")
    second, _, cached = ask()
    assert gauge(single, "spillgate_engine_prompt_tokens_cached_total") == (
        cached_before + prompt_tokens - 1)
    # the usage says so too (OpenAI's field): the gateway's cost clock charges the rest
    assert cached == prompt_tokens - 1
    assert first and second == first


def test_adaptive_threads_serve_concurrent_requests(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """`--adapt-threads` changes llama.cpp's thread count between decodes (a trial starts
    after 8 timed steps): requests running across those switches still finish whole."""
    port = free_port()
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", MODEL, "--port", str(port), "--max-batch", "2", "--n-ctx", "1024",
            "--n-threads", "2", "--adapt-threads"]
    log = Path(tmp_path_factory.mktemp("adapt")) / "engine.log"
    with spawn(argv, log, f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/health") as proc:
        body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 40, "temperature": 0}

        def ask() -> dict[str, Any]:
            reply = httpx.post(proc.base_url + "/completions", json=body, timeout=120)
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: ask(), range(4)))
        assert all(a["usage"]["completion_tokens"] > 0 for a in answers)
        assert all(a["choices"][0]["finish_reason"] in ("stop", "length") for a in answers)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


def test_an_engine_serves_requantized_weights(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`--weights q8_0`: the engine requantizes its GGUF into the cache on first start and
    serves from the copy."""
    port = free_port()
    folder = Path(tmp_path_factory.mktemp("weights"))
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", MODEL, "--port", str(port), "--n-ctx", "1024",
            "--weights", "q8_0", "--weights-cache", str(folder / "cache")]
    with spawn(argv, folder / "engine.log", f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/health") as proc:
        body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 8, "temperature": 0}
        reply = httpx.post(proc.base_url + "/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] > 0
    assert [p.suffix for p in (folder / "cache").iterdir()] == [".gguf"]
