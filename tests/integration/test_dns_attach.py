"""Attach mode through a headless Service's DNS name: one replica per pod address.

Two fake vLLM servers stand for two engine pods, on 127.0.0.1 and 127.0.0.2 with the same
port (as pods behind one Service share a port). The DNS transport is swapped (an injected
resolver answers for `engine.llm.svc`); everything else is the node's real backend,
supervisor, sampler and capacity monitor over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from spillgate.backends.base import UpstreamCall
from spillgate.backends.openai_compat import OpenAICompatBackend
from spillgate.backends.registry import build_backends
from spillgate.capacity import CapacityMonitor
from spillgate.catalog import Catalog
from spillgate.fakes.vllm import FakeVllm, build_app
from spillgate.routing.admission import InflightCounter
from spillgate.routing.routes import build_routes
from spillgate.settings import LocalBackendSettings, Settings
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.telemetry.nvml import NvmlReader
from tests.support import REPO, free_port

MODEL = "llama-3.1-8b-instruct-awq"
NAME = "engine.llm.svc"
PODS = ("127.0.0.1", "127.0.0.2")


async def _serve(engine: FakeVllm, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(engine), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@contextlib.asynccontextmanager
async def pods() -> AsyncIterator[tuple[int, dict[str, FakeVllm]]]:
    """The servers run on the test's own event loop (an async fixture may get another)."""
    port = free_port()
    engines = {host: FakeVllm(MODEL, max_concurrency=4, prefill_s=0.01, latency_s=0.3)
               for host in PODS}
    runners = [await _serve(engine, host, port) for host, engine in engines.items()]
    try:
        yield port, engines
    finally:
        for runner in runners:
            await runner.cleanup()


def _completed(engine: FakeVllm) -> float:
    text = engine.exposition().decode()
    return sum(s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "vllm:request_success_total")


async def test_name_resolves_to_every_pod_and_follows_changes() -> None:
    async with pods() as (port, engines):
        await _check_discovery(port, engines)


async def _check_discovery(port: int, engines: dict[str, FakeVllm]) -> None:
    answers = {NAME: list(PODS)}

    async def resolver(host: str, _port: int) -> list[str]:
        return list(answers.get(host, []))

    settings = Settings(
        local=[LocalBackendSettings(name="gpu", model=MODEL, engine="vllm",
                                    base_urls=[f"http://{NAME}:{port}/v1"], resolve_dns=True,
                                    dns_refresh_s=0.05)],
        models_dir=REPO / "models",
    )
    catalog = Catalog.load(REPO / "models" / "catalog.yaml")
    backends = build_backends(settings, catalog)
    monitor = CapacityMonitor(settings, build_routes(settings, catalog), backends,
                              GatewayMetrics(), InflightCounter(),
                              gpu_reader=NvmlReader(enabled=False), resolver=resolver)
    backend = backends.backends["gpu"]
    assert isinstance(backend, OpenAICompatBackend)
    supervisor = backends.supervisors["gpu"]
    try:
        await monitor.start()
        await supervisor.start()
        urls = sorted(f"http://{h}:{port}/v1" for h in PODS)
        assert backend.base_urls == urls
        assert sorted(supervisor.health_urls) == sorted(u[:-3] + "/health" for u in urls)
        assert await supervisor.wait_ready(10)

        # Each pod is scraped on its own.
        snap = await monitor.sampler.sample_once()
        scraped = {r.url: r.ok for r in snap.engines["gpu"]}
        assert scraped == {u[:-3] + "/metrics": True for u in urls}

        # Concurrent requests go to the least loaded pod: an even split.
        call = UpstreamCall("chat/completions", "r", MODEL)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4}
        await asyncio.gather(*(backend.complete(call, body) for _ in range(6)))
        assert [_completed(engines[h]) for h in PODS] == [3, 3]

        # A pod goes away: the next lookup drops it everywhere.
        answers[NAME] = [PODS[0]]
        await asyncio.sleep(0.06)
        await monitor.discovery.refresh(asyncio.get_running_loop().time() + 3600)
        assert backend.base_urls == [f"http://{PODS[0]}:{port}/v1"]
        snap = await monitor.sampler.sample_once()
        assert [r.url for r in snap.engines["gpu"]] == [f"http://{PODS[0]}:{port}/metrics"]

        # No answer at all: keep the name (it then fails health checks like any engine).
        answers.clear()
        await monitor.discovery.refresh(asyncio.get_running_loop().time() + 7200)
        assert backend.base_urls == [f"http://{NAME}:{port}/v1"]
    finally:
        await monitor.stop()
        await backends.aclose()
