"""Background sampler: NVML + every local engine's /metrics → one CapacitySnapshot per period.

The request path reads `snapshot()` without awaiting; the sampler replaces it whole each round.
A scrape that fails, times out or does not parse becomes `EngineReading(ok=False)` stamped with
the round's time, so consumers see "unknown" rather than stale numbers. Nothing raised by a
reader, a scrape or a parser stops the loop: it is logged and the next round runs.

Scraping goes through an injected `scrape(url) -> text` coroutine (the app passes one built on
its HTTP client; tests pass a function over a fake), and time through an injected clock
(monotonic by default; the overflow controller must be given `now` from the same clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType

from spillgate.errors import ConfigError
from spillgate.tasks import cancel_and_wait
from spillgate.telemetry.engine_metrics import PARSERS
from spillgate.telemetry.nvml import GpuReader
from spillgate.telemetry.snapshot import CapacitySnapshot, EngineReading, GpuReading

log = logging.getLogger(__name__)

Scrape = Callable[[str], Awaitable[str]]
Target = tuple[str, str]  # (metrics URL, engine kind: "vllm" | "llamacpp")


def metrics_url(base_url: str) -> str:
    """An engine's /metrics URL from its OpenAI base URL (`http://h:p/v1` → `http://h:p/metrics`)."""
    root = base_url.rstrip("/")
    root = root.removesuffix("/v1")
    return root + "/metrics"


class TelemetrySampler:
    def __init__(
        self,
        gpu_reader: GpuReader,
        scrape: Scrape,
        targets: Mapping[str, Sequence[Target]],
        *,
        inflight: Callable[[], Mapping[str, int]],
        interval_s: float = 1.0,
        scrape_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for backend, pairs in targets.items():
            for _, kind in pairs:
                if kind not in PARSERS:
                    raise ConfigError(f"telemetry: backend {backend!r} has unknown engine {kind!r}")
        if interval_s <= 0:
            raise ConfigError("telemetry.interval_s must be positive")
        self._gpu_reader = gpu_reader
        self._scrape = scrape
        self._targets = {b: tuple(p) for b, p in targets.items()}
        self._inflight = inflight
        self._interval_s = interval_s
        self._timeout_s = scrape_timeout_s or interval_s
        self._clock = clock
        self._gpus: tuple[GpuReading, ...] = ()
        self._snapshot = CapacitySnapshot(
            nvml_available=gpu_reader.available, taken_at=clock()
        )
        self._task: asyncio.Task[None] | None = None
        # The GPU read in its thread: cancelling the task that awaits it does not stop the
        # thread, so stop() waits for it (NVML is shut down right after stop()).
        self._gpu_read: asyncio.Future[tuple[GpuReading, ...]] | None = None

    def snapshot(self) -> CapacitySnapshot:
        return self._snapshot

    def set_targets(self, backend: str, pairs: Sequence[Target]) -> None:
        """Replace one backend's scrape targets (its pods changed); used from the next round."""
        self._targets = {**self._targets, backend: tuple(pairs)}

    async def start(self) -> None:
        """Take a first snapshot now (so the node starts with facts), then keep sampling."""
        await self._round()
        self._task = asyncio.create_task(self._loop(), name="telemetry-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._gpu_read is not None:
            with contextlib.suppress(Exception):
                await self._gpu_read

    async def _loop(self) -> None:
        while True:
            started = self._clock()
            await self._round()
            elapsed = self._clock() - started
            await asyncio.sleep(max(0.0, self._interval_s - elapsed))

    async def _round(self) -> None:
        try:
            self._snapshot = await self.sample_once()
        except Exception:  # telemetry must never take the node down
            log.exception("telemetry round failed; keeping the previous snapshot")

    async def sample_once(self) -> CapacitySnapshot:
        """One round: GPUs (in a thread) and every engine (concurrently)."""
        # Our own in-flight count is taken before the scrape: a request that ends meanwhile
        # then cannot look like another client's (the cost clock would book its time busy).
        ours = MappingProxyType(dict(self._inflight()))
        gpu_task = asyncio.create_task(self._read_gpus())
        jobs = [
            (backend, self._read_engine(backend, url, kind))
            for backend, pairs in self._targets.items()
            for url, kind in pairs
        ]
        results = await asyncio.gather(*(job for _, job in jobs))
        engines: dict[str, tuple[EngineReading, ...]] = {b: () for b in self._targets}
        for (backend, _), reading in zip(jobs, results, strict=True):
            engines[backend] = (*engines[backend], reading)
        self._gpus = await gpu_task
        return CapacitySnapshot(
            gpus=self._gpus,
            engines=engines,
            inflight=ours,
            nvml_available=self._gpu_reader.available,
            taken_at=self._clock(),
        )

    async def _read_gpus(self) -> tuple[GpuReading, ...]:
        if not self._gpu_reader.available:
            return ()
        try:
            self._gpu_read = asyncio.get_running_loop().run_in_executor(
                None, self._gpu_reader.read)
            return await asyncio.shield(self._gpu_read)
        except Exception:
            log.exception("GPU read failed; keeping the previous (ageing) readings")
            return self._gpus

    async def _read_engine(self, backend: str, url: str, kind: str) -> EngineReading:
        try:
            async with asyncio.timeout(self._timeout_s):
                text = await self._scrape(url)
        except Exception as exc:
            at = self._clock()
            log.debug("scrape of %s failed: %s", url, exc)
            return EngineReading.failed(backend, url, at, f"{type(exc).__name__}: {exc}")
        return PARSERS[kind](text, backend=backend, url=url, at=self._clock())
