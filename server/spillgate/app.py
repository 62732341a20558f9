"""create_app(settings): build every part, join them on app.state, start/stop background work.

Nothing here is a module-level global: two apps in one process share nothing. Tests may pass
their own `backends` (e.g. `spillgate.fakes.backend.FakeBackend`s) and a monotonic `clock`,
and drive the whole request path in process through `httpx.ASGITransport`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.exc import SQLAlchemyError

from spillgate import dispatch
from spillgate.accountant import Accountant, build_accountant
from spillgate.api import admin, batches, console, feedback, files, health, openai
from spillgate.api.deps import Authenticator
from spillgate.api.hot import Gateway
from spillgate.backends.registry import Backends, build_backends
from spillgate.batches import BatchService
from spillgate.cache.step import CacheStep
from spillgate.capacity import CapacityMonitor
from spillgate.catalog import Catalog
from spillgate.learned_file import load_dispatchers
from spillgate.routing.admission import InflightCounter
from spillgate.routing.routes import build_routes
from spillgate.routing.sensitivity import SensitivityDetector
from spillgate.routing.sensitivity_walk import body_texts
from spillgate.routing.stage_rules import build_rules
from spillgate.service import Node
from spillgate.settings import Settings, is_loopback
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.tenancy.keys import live_keys_exist
from spillgate.web import JSONResponse, install_error_handlers

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


def _live_keys_probe(accountant: Accountant) -> Callable[[], Awaitable[bool]]:
    """Whether virtual keys exist; True (refuse anonymous) while the ledger cannot say."""
    async def probe() -> bool:
        try:
            return await live_keys_exist(accountant.ledger)
        except (RuntimeError, SQLAlchemyError) as exc:  # not open yet, or unreachable
            log.warning("cannot tell whether virtual keys exist (%s): refusing anonymous "
                        "requests", type(exc).__name__)
            return True
    return probe


def create_app(
    settings: Settings, *, backends: Backends | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Gateway:
    catalog = Catalog.load(settings.models_dir / "catalog.yaml")
    routes = build_routes(settings, catalog, load_dispatchers(settings))
    if backends is None:
        backends = build_backends(settings, catalog)
    metrics = GatewayMetrics()
    inflight = InflightCounter()
    accountant = build_accountant(settings, catalog, routes, metrics)
    capacity = CapacityMonitor(settings, routes, backends, metrics, inflight, clock=clock)
    # Measured GPU power (NVML or the DCGM exporter) drives the cost clock's energy share.
    accountant.watch(lambda: capacity.last, settings)
    node = Node(
        limits=settings.server,
        routes=routes,
        upstreams=dispatch.Upstreams(backends.backends, backends.breakers, backends.attempts),
        capacity=capacity.snapshot,
        inflight=inflight,
        priority_backends=frozenset(b.name for b in settings.local if b.sensitive_priority),
        detector=SensitivityDetector(),
        extract=body_texts,
        accountant=accountant,
        metrics=metrics,
        rules=build_rules(settings.rules, routes),
        cache=CacheStep.from_settings(settings, metrics.registry),
    )
    parts = Parts(backends, capacity)
    batch_service = BatchService(node, settings.batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await accountant.open()
        for supervisor in backends.supervisors.values():
            await supervisor.start()
        await capacity.start()
        if settings.batch.enabled:
            await batch_service.start(accountant.ledger)
        _quiet_gc()
        try:
            yield
        finally:
            await batch_service.stop()
            await capacity.stop()
            await parts.backends.aclose()
            await accountant.aclose()

    # FastAPI's native OpenTelemetry is off: the node exports Prometheus metrics, and the
    # per-request spans cost measurable latency with no provider configured to receive them.
    app = Gateway(title="Spillgate", version="0.1.0", lifespan=lifespan,
                  default_response_class=JSONResponse, docs_url=None, redoc_url=None,
                  openapi_url=None, telemetry=_NO_OTEL)
    app.state.node = node
    app.state.settings = settings
    app.state.accountant = accountant
    app.state.capacity = capacity  # the latest telemetry sample, for /admin/live
    app.state.batches = batch_service
    anonymous = settings.server.allow_anonymous_loopback
    app.state.authenticate = Authenticator(
        settings.client_keys(), accountant.lookup_key,
        open_access=(not settings.client_keys() and is_loopback(settings.server.host)
                     and anonymous is not False),
        keys_exist=None if anonymous else _live_keys_probe(accountant),
    )
    install_error_handlers(app)
    app.serve_hot(node, app.state.authenticate)  # chat, completions, embeddings: api/hot.py
    app.include_router(openai.router)
    app.include_router(feedback.router)
    if settings.batch.enabled:
        app.include_router(files.router)
        app.include_router(batches.router)
        app.include_router(batches.admin_router)
    app.include_router(health.router)
    app.include_router(admin.build_router())
    app.include_router(console.build_router())
    return app

