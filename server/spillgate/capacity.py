"""The router's view of local capacity: supervisors + telemetry sampler + overflow controller.

Every `interval_s` the monitor samples NVML and each local engine's /metrics (one
`TelemetrySampler` round), feeds the snapshot to the `OverflowController`, and rebuilds the
per-backend, per-route view (`RouteLoad`). `snapshot()` — called on every request, never
awaiting — adds what must be live: supervisor readiness and the gateway's own in-flight count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from spillgate.backends.discovery import DnsDiscovery, DnsTarget, Resolver, system_resolver
from spillgate.backends.http import Timeouts, UpstreamHttp
from spillgate.backends.openai_compat import OpenAICompatBackend
from spillgate.backends.registry import Backends
from spillgate.routing.admission import InflightCounter, admit_limit
from spillgate.routing.overflow import (
    OVERFLOW_GPU,
    OVERFLOW_KV_CACHE,
    OVERFLOW_QUEUE,
    TELEMETRY_UNKNOWN,
    BackendLimits,
    OverflowConfig,
    OverflowController,
    RouteObjective,
)
from spillgate.routing.router import LocalCapacity, RouteLoad
from spillgate.routing.routes import RouteTable
from spillgate.settings import Settings
from spillgate.tasks import cancel_and_wait
from spillgate.telemetry.dcgm import DcgmReader, PodFilter
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.telemetry.nvml import GpuReader, NvmlReader
from spillgate.telemetry.sampler import TelemetrySampler
from spillgate.telemetry.snapshot import CapacitySnapshot

log = logging.getLogger(__name__)

SPILL_ALL = (OVERFLOW_KV_CACHE, OVERFLOW_GPU)  # engine saturated: no request fits, spill all


def overflow_config(
    settings: Settings, routes: RouteTable, slots: Mapping[str, int] | None = None
) -> OverflowConfig:
    """`slots`: each local backend's sequence slots (Backends.slots); max_batch where absent."""
    slots = slots or {}
    limits = {
        local.name: BackendLimits(slots.get(local.name, local.max_batch), local.max_queue,
                                  local.engine == "vllm")
        for local in settings.local
    }
    objectives = tuple(
        RouteObjective(route.name, route.local.backend, route.ttft_slo_s)
        for route in routes.all()
        if route.policy in ("auto", "cascade") and route.local is not None
    )
    t = settings.telemetry
    return OverflowConfig(
        objectives, limits, kv_high=t.kv_cache_high, kv_clear=min(0.8, t.kv_cache_high),
        min_dwell_s=t.min_dwell_s, stale_after_s=t.stale_after_s,
    )


def gpu_reader_for(settings: Settings) -> GpuReader:
    """The DCGM exporter when configured (Kubernetes: the gateway pod has no GPU), else NVML."""
    t = settings.telemetry
    if t.dcgm_url:
        return DcgmReader(t.dcgm_url, PodFilter(t.dcgm_pod_prefix, t.dcgm_namespace))
    return NvmlReader(enabled=t.nvml)


class CapacityMonitor:
    def __init__(
        self, settings: Settings, routes: RouteTable, backends: Backends,
        metrics: GatewayMetrics, inflight: InflightCounter, *,
        gpu_reader: GpuReader | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backends = backends
        self._metrics = metrics
        self._inflight_counter = inflight
        self._clock = clock
        self._interval_s = settings.telemetry.interval_s
        self._headroom = settings.telemetry.headroom
        self._locals = {
            name: b for name, b in backends.backends.items()
            if name in backends.supervisors and isinstance(b, OpenAICompatBackend)
        }
        self._controller = OverflowController(overflow_config(settings, routes, backends.slots))
        self._scraper = UpstreamHttp("http://127.0.0.1", timeouts=Timeouts(1.0, 2.0, 2.0),
                                     max_connections=8)
        self._gpus = gpu_reader or gpu_reader_for(settings)
        kinds = {local.name: local.engine for local in settings.local}
        self.sampler = TelemetrySampler(
            self._gpus, self._scrape,
            {n: [(u, kinds[n]) for u in b.metrics_urls()] for n, b in self._locals.items()},
            inflight=self._inflight, interval_s=self._interval_s, clock=clock,
        )
        self.discovery = DnsDiscovery(
            [DnsTarget(local.name, tuple(local.base_urls), local.dns_refresh_s,
                       self._replicas_changed(local.name, local.engine))
             for local in settings.local
             if local.resolve_dns and local.base_urls and local.name in self._locals],
            resolver,
        )
        self._view: Mapping[str, LocalCapacity] = MappingProxyType({})
        self.last = CapacitySnapshot(taken_at=clock())  # the latest sample (the cost clock)
        self._stale_after_s = settings.telemetry.stale_after_s
        self._spilled_seen: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # --- the request path ---------------------------------------------------------------

    def snapshot(self) -> Mapping[str, LocalCapacity]:
        """The background view plus what must be live: readiness and our own in-flight
        requests (the view's `inflight` holds only the load other clients put on the engine)."""
        return {
            name: replace(base, ready=self._backends.supervisors[name].ready,
                          inflight=base.inflight + self._inflight_counter.count(name),
                          unsupported=self._backends.supervisors[name].unsupported)
            for name, base in self._view.items()
        }

    # --- background ---------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.discovery.refresh(self._clock())
        except Exception:  # the loop retries; the node starts on the names as configured
            log.exception("first DNS discovery round failed")
        self.refresh(CapacitySnapshot(taken_at=self._clock()))
        self._task = asyncio.create_task(self._loop(), name="capacity-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._scraper.aclose()
        close = getattr(self._gpus, "close", None)
        if close:
            close()

    async def _loop(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.discovery.refresh(started)
                self.refresh(await self.sampler.sample_once())
            except Exception:  # never let telemetry take the node down
                log.exception("capacity refresh failed; keeping the previous view")
            await asyncio.sleep(max(0.0, self._interval_s - (self._clock() - started)))

    def _replicas_changed(
        self, name: str, kind: str
    ) -> Callable[[list[str]], Awaitable[None]]:
        """What a new DNS answer changes: where requests go, health probes, /metrics scrapes."""
        backend, supervisor = self._locals[name], self._backends.supervisors[name]

        async def apply(urls: list[str]) -> None:
            await backend.set_base_urls(urls)
            supervisor.set_health_urls([u.removesuffix("/v1") + "/health" for u in urls])
            self.sampler.set_targets(name, [(u, kind) for u in backend.metrics_urls()])

        return apply

    async def _scrape(self, url: str) -> str:
        status, text = await self._scraper.get_text(url)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return text

    def _inflight(self) -> dict[str, int]:
        return {name: self._inflight_counter.count(name) for name in self._locals}

    def power_watts(self) -> float | None:
        """Measured power of all the node's GPUs now (the cost clock's energy input); None
        when no fresh reading reports power (the clock then uses the nominal figure)."""
        snap = self.last
        watts = [g.power_watts for g in snap.fresh_gpus(self._clock(), self._stale_after_s)
                 if g.power_watts is not None]
        return sum(watts) if watts else None

    def refresh(self, snap: CapacitySnapshot) -> None:
        self.last = snap
        now = self._clock()
        self._controller.update(snap, now)
        view = {}
        for name in self._backends.supervisors:
            view[name] = self._backend_view(name, snap, now)
        self._view = MappingProxyType(view)
        self._export(snap, now)

    def _backend_view(self, name: str, snap: CapacitySnapshot, now: float) -> LocalCapacity:
        config = self._controller.config
        fresh = snap.fresh_engines(name, now, config.stale_after_s)
        depth = sum((r.running or 0) + (r.waiting or 0) for r in fresh)
        # Work other clients put on the engine: what it reports beyond our own requests.
        external = max(0, round(depth) - snap.inflight.get(name, 0)) if fresh else 0
        queue_full = any(
            r.queue_capacity is not None and (r.waiting or 0) >= r.queue_capacity for r in fresh
        )
        urls = {r.url for r in fresh}
        tracks = [t for (b, url), t in self._controller.state.tracks.items()
                  if b == name and (url in urls or not urls)]
        engines = max(1, len(snap.engines.get(name, ())))
        routes = {}
        for objective in config.routes:
            if objective.backend != name:
                continue
            verdict = self._controller.verdict(objective.route, name)
            routes[objective.route] = RouteLoad(
                spill_reason=verdict.reason if verdict.spill and verdict.reason in SPILL_ALL
                else None,
                admit_limit=admit_limit(objective.ttft_slo_s, config.backends[name], engines,
                                        tracks, headroom=self._headroom),
                limit_reason=OVERFLOW_QUEUE if fresh else TELEMETRY_UNKNOWN,
            )
        return LocalCapacity(ready=False, queue_full=queue_full, inflight=external,
                             routes=MappingProxyType(routes))

    def _export(self, snap: CapacitySnapshot, now: float) -> None:
        m = self._metrics
        for name, supervisor in self._backends.supervisors.items():
            m.backend_up.labels(name).set(1 if supervisor.ready else 0)
            fresh = snap.fresh_engines(name, now, self._controller.config.stale_after_s)
            m.engine_queue.labels(name).set(sum(r.waiting or 0 for r in fresh))
        for name, backend in self._backends.backends.items():
            count = getattr(backend, "inflight", None)
            if callable(count):
                m.inflight.labels(name).set(count())
        for name, breaker in self._backends.breakers.items():
            m.breaker_open.labels(name).set(1 if breaker.state == "open" else 0)
        for gpu in snap.gpus:
            m.gpu_util.labels(str(gpu.index)).set(gpu.utilization_ratio)
            m.gpu_memory.labels(str(gpu.index)).set(gpu.memory_used_bytes)
            if gpu.power_watts is not None:
                m.gpu_power.labels(str(gpu.index)).set(gpu.power_watts)
        for (route, _), verdict in self._controller.verdicts().items():
            spilled = m.spilled_on(route)
            recent = spilled > self._spilled_seen.get(route, 0)
            self._spilled_seen[route] = spilled
            m.route_spilling.labels(route).set(1 if verdict.spill or recent else 0)
