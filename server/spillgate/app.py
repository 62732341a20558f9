"""create_app(settings): build every part, join them on app.state, start/stop background work.

Nothing here is a module-level global: two apps in one process share nothing.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from spillgate import dispatch
from spillgate.accounting.accountant import build_accountant
from spillgate.api import admin, health, openai
from spillgate.api.deps import Authenticator
from spillgate.api.errors import install_error_handlers
from spillgate.api.responses import JSONResponse
from spillgate.backends.registry import Backends, build_backends
from spillgate.engines.catalog import Catalog
from spillgate.routing.admission import InflightCounter
from spillgate.routing.routes import build_routes
from spillgate.routing.sensitivity import SensitivityDetector, request_texts
from spillgate.service import Node
from spillgate.settings import Settings, is_loopback
from spillgate.telemetry.capacity import CapacityMonitor
from spillgate.telemetry.metrics import GatewayMetrics

log = logging.getLogger(__name__)


_NO_OTEL: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False,
                             "operation_spans": False}


def _quiet_gc() -> None:
    """Everything built at start-up (modules, settings, pools) lives as long as the process:
    freeze it out of the cyclic collector, and collect the young generation less often, so
    full collections stop pausing the event loop for tens of milliseconds under load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


@dataclass
class Parts:
    """What the lifespan starts and stops."""

    backends: Backends
    capacity: CapacityMonitor


def create_app(settings: Settings) -> FastAPI:
    catalog = Catalog.load(settings.models_dir / "catalog.yaml")
    routes = build_routes(settings, catalog)
    backends = build_backends(settings, catalog)
    metrics = GatewayMetrics()
    inflight = InflightCounter()
    capacity = CapacityMonitor(settings, routes, backends, metrics, inflight)
    # Measured GPU power (NVML or the DCGM exporter) drives the cost clock's energy share.
    accountant = build_accountant(settings, catalog, routes, metrics, power=capacity.power_watts)
    node = Node(
        limits=settings.server,
        routes=routes,
        upstreams=dispatch.Upstreams(backends.backends, backends.breakers, backends.attempts),
        capacity=capacity.snapshot,
        inflight=inflight,
        priority_backends=frozenset(b.name for b in settings.local if b.sensitive_priority),
        detector=SensitivityDetector(),
        extract=request_texts,
        accountant=accountant,
        metrics=metrics,
    )
    parts = Parts(backends, capacity)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await accountant.open()
        for supervisor in backends.supervisors.values():
            await supervisor.start()
        await capacity.start()
        _quiet_gc()
        try:
            yield
        finally:
            await capacity.stop()
            await parts.backends.aclose()
            await accountant.aclose()

    # FastAPI's native OpenTelemetry is off: the node exports Prometheus metrics, and the
    # per-request spans cost measurable latency with no provider configured to receive them.
    app = FastAPI(title="Spillgate", version="0.1.0", lifespan=lifespan,
                  default_response_class=JSONResponse, docs_url=None, redoc_url=None,
                  openapi_url=None, telemetry=_NO_OTEL)
    app.state.node = node
    app.state.settings = settings
    app.state.accountant = accountant
    app.state.authenticate = Authenticator(
        settings.client_keys(), accountant.lookup_key,
        open_access=not settings.client_keys() and is_loopback(settings.server.host),
    )
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(admin.build_router())
    return app

