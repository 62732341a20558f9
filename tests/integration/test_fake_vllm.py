"""The fake vLLM server as a process: OpenAI routes, real queueing, /metrics parsed by our parser,
and the sampler + overflow controller reading it over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest

from spillgate.routing.overflow import (
    LOCAL_OK,
    OVERFLOW_KV_CACHE,
    BackendLimits,
    OverflowConfig,
    OverflowController,
    RouteObjective,
)
from spillgate.telemetry.engine_metrics import parse_vllm
from spillgate.telemetry.nvml import NvmlReader
from spillgate.telemetry.sampler import TelemetrySampler, metrics_url
from spillgate.telemetry.snapshot import EngineReading
from tests.support import Proc, free_port, spawn

# The async fixture lives on the session loop (pyproject), so the tests run there too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

NAME = "llama-fake"
SLOTS = 2
LATENCY_S = 1.0


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    log = Path(tmp_path_factory.mktemp("fakevllm")) / "fake_vllm.log"
    argv = ["-m", "spillgate.fakes.vllm", "--port", str(port), "--served-name", NAME,
            "--max-concurrency", str(SLOTS), "--prefill-ms", "50",
            "--latency-ms", str(LATENCY_S * 1000)]
    with spawn(argv, log, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health") as p:
        yield p


@pytest.fixture
async def client(fake: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=30) as c:
        await c.delete("/_fake/load")
        yield c
        await c.delete("/_fake/load")


async def scrape(client: httpx.AsyncClient) -> EngineReading:
    page = await client.get("/metrics")
    page.raise_for_status()
    return parse_vllm(page.text, backend="gpu", url=str(page.url), at=0.0)


def chat(max_tokens: int = 4, **extra: object) -> dict[str, object]:
    return {"model": NAME, "messages": [{"role": "user", "content": "three word prompt"}],
            "max_tokens": max_tokens, **extra}


async def test_openai_routes(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [NAME]
    answer = (await client.post("/v1/chat/completions", json=chat(3))).json()
    assert answer["choices"][0]["message"]["content"] == "fake fake fake"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    text = (await client.post("/v1/completions",
                              json={"model": NAME, "prompt": "a b", "max_tokens": 2})).json()
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "fake fake"
    missing = await client.post("/v1/chat/completions", json={**chat(), "model": "gpt-4o"})
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]


async def test_streaming_with_usage(client: httpx.AsyncClient) -> None:
    body = chat(5, stream=True, stream_options={"include_usage": True})
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [orjson.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "fake fake fake fake fake"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_gauges_follow_real_inflight_and_counters_follow_answers(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    requests = [asyncio.create_task(client.post("/v1/chat/completions", json=chat(4)))
                for _ in range(SLOTS + 1)]
    await asyncio.sleep(LATENCY_S / 2)
    during = await scrape(client)
    assert (during.running, during.waiting, during.kv_cache_usage) == (SLOTS, 1.0, 1.0)
    answers = [(await r).json() for r in requests]
    after = await scrape(client)
    assert (after.running, after.waiting) == (0.0, 0.0)
    made = sum(a["usage"]["completion_tokens"] for a in answers)
    assert after.generation_tokens_total == (before.generation_tokens_total or 0) + made
    assert after.requests_completed_total == (before.requests_completed_total or 0) + len(answers)
    assert after.ttft is not None
    # A fresh fake has no TTFT series yet (this test run alone): then all of it is new.
    delta = after.ttft if before.ttft is None else after.ttft.since(before.ttft)
    assert delta is not None and delta.count == len(answers)
    assert after.queue_time is not None and after.queue_time.count >= len(answers)


async def test_control_endpoint_sets_reported_values_and_ttft(
    client: httpx.AsyncClient,
) -> None:
    load = {"running": 7, "waiting": 3, "kv_cache_usage": 0.95}
    assert (await client.post("/_fake/load", json=load)).status_code == 200
    reading = await scrape(client)
    assert (reading.running, reading.waiting, reading.kv_cache_usage) == (7.0, 3.0, 0.95)
    await client.post("/_fake/load", json={"running": None, "waiting": None,
                                           "kv_cache_usage": None, "ttft_s": 0.4})
    before = await scrape(client)
    await client.post("/v1/chat/completions", json=chat(1))
    after = await scrape(client)
    assert (after.running, after.kv_cache_usage) == (0.0, 0.0)
    assert after.ttft is not None
    # A fresh fake has no TTFT series yet (this test run alone): then all of it is new.
    delta = after.ttft if before.ttft is None else after.ttft.since(before.ttft)
    assert delta is not None and (delta.mean() or 0) >= 0.4
    bad = await client.post("/_fake/load", json={"queue": 1})
    assert bad.status_code == 400


async def test_sampler_and_controller_over_http(fake: Proc, client: httpx.AsyncClient) -> None:
    async with aiohttp.ClientSession() as session:

        async def fetch(url: str) -> str:
            async with session.get(url) as response:
                response.raise_for_status()
                return await response.text()

        url = metrics_url(fake.base_url + "/v1")
        dead = f"http://127.0.0.1:{free_port()}/metrics"
        sampler = TelemetrySampler(NvmlReader(enabled=False), fetch,
                                   {"gpu": [(url, "vllm"), (dead, "vllm")]},
                                   inflight=lambda: {"gpu": 0})
        config = OverflowConfig(routes=(RouteObjective("big", "gpu", 2.0),),
                                backends={"gpu": BackendLimits(SLOTS, 8, uses_gpu=True)})
        controller = OverflowController(config)
        snap = await sampler.sample_once()
        live, down = snap.engines["gpu"]
        assert live.ok and not down.ok
        controller.update(snap, snap.taken_at)
        assert controller.verdict("big", "gpu").reason == LOCAL_OK
        await client.post("/_fake/load", json={"kv_cache_usage": 0.97})
        snap = await sampler.sample_once()
        controller.update(snap, snap.taken_at)
        verdict = controller.verdict("big", "gpu")
        assert (verdict.spill, verdict.reason) == (True, OVERFLOW_KV_CACHE)
