"""Immutable readings of the node's capacity: GPUs (NVML), engines (/metrics), the gateway.

Every reading carries the time it was taken (`at`, on the sampler's monotonic clock), so a
consumer can tell fresh from stale: a stale reading is an unknown, never a zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    utilization_ratio: float  # 0..1, share of the last sample period a kernel was running
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float | None  # None where the board does not report it
    temperature_c: float | None
    at: float


@dataclass(frozen=True, slots=True)
class HistogramSummary:
    """A Prometheus histogram summed over label sets: cumulative bucket counts, sum, count."""

    buckets: tuple[tuple[float, float], ...]  # (upper bound `le`, cumulative count), ascending
    sum: float
    count: float

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def since(self, older: HistogramSummary) -> HistogramSummary | None:
        """Observations made between `older` and this one; None after a counter reset."""
        if self.count < older.count or self.sum < older.sum:
            return None
        before = dict(older.buckets)
        buckets = tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets)
        return HistogramSummary(buckets, self.sum - older.sum, self.count - older.count)

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket holding the q-quantile (as PromQL does)."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower_bound  # the tail bucket has no upper edge to interpolate to
                in_bucket = cumulative - lower_count
                share = (rank - lower_count) / in_bucket if in_bucket > 0 else 1.0
                return lower_bound + (le - lower_bound) * share
            lower_bound, lower_count = le, cumulative
        return lower_bound


@dataclass(frozen=True, slots=True)
class EngineReading:
    """One scrape of one engine's /metrics. `ok=False` means the scrape or parse failed."""

    backend: str
    url: str
    ok: bool
    at: float
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    queue_capacity: float | None = None  # waiting requests the engine accepts before 429
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    requests_completed_total: float | None = None
    ttft: HistogramSummary | None = None
    queue_time: HistogramSummary | None = None
    error: str | None = None

    @classmethod
    def failed(cls, backend: str, url: str, at: float, error: str) -> EngineReading:
        return cls(backend=backend, url=url, ok=False, at=at, error=error)


def _frozen_engines(
    engines: Mapping[str, tuple[EngineReading, ...]],
) -> Mapping[str, tuple[EngineReading, ...]]:
    return MappingProxyType(dict(engines))


def _frozen_counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counts))


@dataclass(frozen=True, slots=True)
class CapacitySnapshot:
    """Everything the overflow controller looks at, taken at one moment."""

    gpus: tuple[GpuReading, ...] = ()
    engines: Mapping[str, tuple[EngineReading, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    inflight: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    nvml_available: bool = False
    taken_at: float = 0.0

    def __post_init__(self) -> None:
        # Callers may pass plain dicts; keep the snapshot read-only whatever they passed.
        object.__setattr__(self, "engines", _frozen_engines(self.engines))
        object.__setattr__(self, "inflight", _frozen_counts(self.inflight))

    def fresh_engines(
        self, backend: str, now: float, stale_after_s: float
    ) -> tuple[EngineReading, ...]:
        return tuple(r for r in self.engines.get(backend, ()) if fresh(r, now, stale_after_s))

    def fresh_gpus(self, now: float, stale_after_s: float) -> tuple[GpuReading, ...]:
        if not self.nvml_available:
            return ()
        return tuple(g for g in self.gpus if fresh(g, now, stale_after_s))

    def gpu_power(self, now: float, stale_after_s: float) -> float | None:
        """Mean measured board power per GPU, in watts; None unless every GPU has a fresh
        reading (a partial figure would misprice the node)."""
        gpus = self.fresh_gpus(now, stale_after_s)
        if not gpus or len(gpus) != len(self.gpus):
            return None
        watts = [g.power_watts for g in gpus]
        if any(w is None for w in watts):
            return None
        return math.fsum(w or 0.0 for w in watts) / len(watts)

    def external_running(self, now: float, stale_after_s: float) -> int:
        """Sequences the engines run beyond this node's own in-flight requests: other
        clients using the hardware (0 when unknown)."""
        total = 0
        for backend in self.engines:
            readings = self.fresh_engines(backend, now, stale_after_s)
            running = round(math.fsum(r.running or 0.0 for r in readings))
            total += max(0, running - self.inflight.get(backend, 0))
        return total


def fresh(reading: GpuReading | EngineReading, now: float, stale_after_s: float) -> bool:
    """True for a successful reading no older than `stale_after_s` (and not from the future)."""
    if isinstance(reading, EngineReading) and not reading.ok:
        return False
    age = now - reading.at
    return 0.0 <= age <= stale_after_s
