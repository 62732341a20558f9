"""The gateway without a GPU reads GPU utilization and power from a DCGM exporter over HTTP:
the capacity monitor's snapshot, its exported gauges and the cost clock's power input.

The exporter is a loopback HTTP server serving real dcgm-exporter text (tests/fixtures); the
rest is the node's own monitor, sampler and reader."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from spillgate.backends.registry import build_backends
from spillgate.capacity import CapacityMonitor
from spillgate.catalog import Catalog
from spillgate.routing.admission import InflightCounter
from spillgate.routing.routes import build_routes
from spillgate.settings import LocalBackendSettings, Settings, TelemetrySettings
from spillgate.telemetry.metrics import GatewayMetrics
from tests.support import REPO, free_port

TEXT = (Path(__file__).parents[1] / "fixtures" / "dcgm_exporter.txt").read_text()


@contextlib.asynccontextmanager
async def exporter() -> AsyncIterator[str]:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=TEXT, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()


async def test_gpu_readings_come_from_the_dcgm_exporter() -> None:
    async with exporter() as url:
        settings = Settings(
            local=[LocalBackendSettings(name="gpu", model="llama-3.1-8b-instruct-awq",
                                        engine="vllm",
                                        base_urls=[f"http://127.0.0.1:{free_port()}/v1"])],
            telemetry=TelemetrySettings(nvml=False, dcgm_url=url,
                                        dcgm_pod_prefix="sg-spillgate-engine-",
                                        dcgm_namespace="llm"),
            models_dir=REPO / "models",
        )
        catalog = Catalog.load(REPO / "models" / "catalog.yaml")
        backends = build_backends(settings, catalog)
        metrics = GatewayMetrics()
        monitor = CapacityMonitor(settings, build_routes(settings, catalog), backends, metrics,
                                  InflightCounter())
        try:
            assert monitor.power_watts() is None  # nothing read yet: nominal power
            snap = await monitor.sampler.sample_once()
            monitor.refresh(snap)
            assert snap.nvml_available and [g.utilization_ratio for g in snap.gpus] == [0.98,
                                                                                        0.41]
            assert monitor.power_watts() == 612.5 + 301.25  # the two engine pods' GPUs only
            util = {s.labels["gpu"]: s.value for f in metrics.registry.collect()
                    for s in f.samples if s.name == "spillgate_gpu_utilization_ratio"}
            assert util == {"0": 0.98, "1": 0.41}
        finally:
            await monitor.stop()
            await backends.aclose()
