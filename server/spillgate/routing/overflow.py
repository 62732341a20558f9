"""The overflow controller: can local capacity still meet a route's time-to-first-token goal?

It turns telemetry into one verdict per (route, local backend): spill to the paid API or not,
with a reason code. Everything is a pure function of (state, snapshot, now) — `transition()`
below — and `OverflowController` only keeps the latest state, so the policy is table-tested.

Estimate (per local backend, `estimate_wait_s`): a new request waits for the requests ahead of
it to be admitted into the engine's batch, then for its own prefill:

    wait = base_ttft + ahead / service_rate

- ahead: 0 while the engine has a free batch slot; else waiting + 1 (plus any running beyond
  the configured batch capacity). The gateway's own in-flight count to the backend is a floor
  on the engine's depth: it is fresh even when a scrape is not.
- service_rate: requests admitted per second (first tokens per second, from the TTFT histogram
  count; vLLM's request_success_total when there is no histogram), measured between successive
  readings *while the engine was queueing* (at lower load it measures demand, not capacity),
  EWMA-smoothed.
- base_ttft: the engine's TTFT measured while it was not queueing, EWMA-smoothed.
- The estimate is never below the mean TTFT the engine actually reported in the last interval.
- With several engines behind one backend (vLLM pods) the best engine counts: the gateway sends
  new requests to the least loaded.

Pressure terms:
- KV cache usage >= kv_high on a fresh reading: the engine is saturated whatever the queue says
  (vLLM queues or preempts next) → "overflow_kv_cache".
- GPU saturated (every fresh NVML reading at >= gpu_util_high) on a backend that uses the GPU:
  its free batch slots are not real capacity, so a new request counts as queued behind the
  running ones. If that alone pushes the estimate over the objective → "overflow_gpu".

Unknown telemetry (every scrape of the backend failed or is older than stale_after_s): the
controller does not guess high. It estimates from the gateway's own in-flight count against the
configured batch capacity (times the number of engines) and the last known service rate and
base TTFT; with no service rate ever measured, it spills only when in-flight exceeds batch
capacity + queue_threshold (the engine would be refusing requests anyway). Reason:
"telemetry_unknown" (with spill true or false).

Hysteresis: enter spill when the estimate exceeds the objective, leave when it is below
objective * leave_ratio (and KV usage below kv_clear); any change of state waits min_dwell_s
after the previous change, so the state never toggles twice within min_dwell_s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from spillgate.errors import ConfigError
from spillgate.telemetry.snapshot import CapacitySnapshot, EngineReading

LOCAL_OK = "local_ok"
OVERFLOW_QUEUE = "overflow_queue"
OVERFLOW_KV_CACHE = "overflow_kv_cache"
OVERFLOW_GPU = "overflow_gpu"
TELEMETRY_UNKNOWN = "telemetry_unknown"
RECOVERED = "recovered"
REASONS = (LOCAL_OK, OVERFLOW_QUEUE, OVERFLOW_KV_CACHE, OVERFLOW_GPU, TELEMETRY_UNKNOWN, RECOVERED)


@dataclass(frozen=True, slots=True)
class BackendLimits:
    batch_capacity: int  # sequences decoded together (llama.cpp max_batch, vLLM max-num-seqs)
    queue_threshold: int  # waiting requests tolerated when nothing else is known (max_queue)
    uses_gpu: bool = False


@dataclass(frozen=True, slots=True)
class RouteObjective:
    route: str
    backend: str
    ttft_slo_s: float


@dataclass(frozen=True, slots=True)
class OverflowConfig:
    routes: tuple[RouteObjective, ...]
    backends: Mapping[str, BackendLimits]
    kv_high: float = 0.9
    kv_clear: float = 0.8
    gpu_util_high: float = 0.97
    leave_ratio: float = 0.7
    min_dwell_s: float = 5.0
    stale_after_s: float = 5.0
    ewma_alpha: float = 0.3

    def __post_init__(self) -> None:
        for objective in self.routes:
            if objective.backend not in self.backends:
                raise ConfigError(
                    f"route {objective.route!r}: no limits for local backend {objective.backend!r}"
                )
        if not 0 < self.leave_ratio <= 1 or not 0 < self.ewma_alpha <= 1:
            raise ConfigError("overflow: leave_ratio and ewma_alpha must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Verdict:
    spill: bool
    reason: str
    estimate_s: float | None


# --- per-engine tracking: service rate and unqueued TTFT from successive readings ----------


@dataclass(frozen=True, slots=True)
class EngineTrack:
    last: EngineReading  # the latest successful reading
    rate_rps: float | None = None  # requests admitted per second while queueing (EWMA)
    base_ttft_s: float | None = None  # TTFT while not queueing (EWMA)
    recent_ttft_s: float | None = None  # mean TTFT of first tokens since the previous reading


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else alpha * sample + (1 - alpha) * old


def _queued(reading: EngineReading, limits: BackendLimits) -> bool:
    return (reading.waiting or 0) > 0 or (reading.running or 0) >= limits.batch_capacity


def _admitted(old: EngineReading, new: EngineReading) -> float | None:
    """Requests admitted between two readings; None when unknown or the counters reset."""
    if old.ttft is not None and new.ttft is not None:
        delta = new.ttft.count - old.ttft.count
    elif old.requests_completed_total is not None and new.requests_completed_total is not None:
        delta = new.requests_completed_total - old.requests_completed_total
    else:
        return None
    return delta if delta >= 0 else None


def advance_track(
    track: EngineTrack | None, reading: EngineReading, limits: BackendLimits, alpha: float
) -> EngineTrack | None:
    """Fold one reading into an engine's track (failed and already-seen readings change nothing)."""
    if not reading.ok:
        return track
    if track is None:
        return EngineTrack(last=reading)
    if reading.at <= track.last.at:
        return track
    dt = reading.at - track.last.at
    queued = _queued(track.last, limits) or _queued(reading, limits)
    admitted = _admitted(track.last, reading)
    rate = track.rate_rps
    if queued and admitted is not None and (admitted > 0 or rate is not None):
        rate = _ewma(rate, admitted / dt, alpha)
    recent = None
    if track.last.ttft is not None and reading.ttft is not None:
        delta = reading.ttft.since(track.last.ttft)
        recent = delta.mean() if delta is not None else None
    base = track.base_ttft_s
    if recent is not None and not queued:
        base = _ewma(base, recent, alpha)
    return EngineTrack(last=reading, rate_rps=rate, base_ttft_s=base, recent_ttft_s=recent)


# --- estimates -------------------------------------------------------------------------------


def _wait_s(ahead: float, rate: float | None, base: float) -> float | None:
    if ahead <= 0:
        return base
    if rate is None:
        return None
    return base + ahead / rate if rate > 0 else math.inf


def engine_wait_s(
    reading: EngineReading, track: EngineTrack | None, limits: BackendLimits, gpu_saturated: bool
) -> float | None:
    """Wait a new request would see on one engine; None if it must queue at an unknown rate."""
    waiting, running = reading.waiting or 0.0, reading.running or 0.0
    slots = float(limits.batch_capacity)
    if gpu_saturated and running > 0:
        slots = min(slots, running)
    full = waiting > 0 or running >= slots
    ahead = waiting + max(0.0, running - slots) + 1 if full else 0.0
    base = track.base_ttft_s if track and track.base_ttft_s is not None else 0.0
    predicted = _wait_s(ahead, track.rate_rps if track else None, base)
    recent = track.recent_ttft_s if track else None
    if predicted is None or recent is None:
        return predicted
    return max(predicted, recent)


def _gateway_floor_s(
    inflight: int, limits: BackendLimits, engines: int, tracks: Sequence[EngineTrack]
) -> float | None:
    """The wait implied by the gateway's own in-flight count alone (fresh even when scrapes
    are not): everything beyond the engines' batch slots queues at the known service rate."""
    rates = [t.rate_rps for t in tracks if t.rate_rps is not None]
    bases = [t.base_ttft_s for t in tracks if t.base_ttft_s is not None]
    ahead = max(0, inflight - limits.batch_capacity * engines + 1)
    return _wait_s(ahead, sum(rates) if rates else None, max(bases, default=0.0))


def estimate_wait_s(
    readings: Sequence[EngineReading],
    tracks: Mapping[str, EngineTrack],
    inflight: int,
    limits: BackendLimits,
    *,
    gpu_saturated: bool = False,
) -> float | None:
    """Estimated TTFT of a new request on a backend, from fresh `readings` (tracks by URL)."""
    per_engine = [
        engine_wait_s(r, tracks.get(r.url), limits, gpu_saturated) for r in readings
    ]
    known = [w for w in per_engine if w is not None]
    best = min(known) if known else None
    # Only engines answering now add service rate (a dead pod serves nobody).
    live = [tracks[r.url] for r in readings if r.url in tracks]
    floor = _gateway_floor_s(inflight, limits, max(1, len(readings)), live)
    if best is None or floor is None:
        return best
    return max(best, floor)


# --- assessment of one (route, backend) now ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    estimate_s: float | None
    reason: str  # the overflow reason when `over`, else local_ok / telemetry_unknown
    over: bool  # conditions to enter spill
    clear: bool  # conditions to leave spill


def _assess_unknown(
    objective: RouteObjective, limits: BackendLimits, engines: int, inflight: int,
    tracks: Sequence[EngineTrack], leave_ratio: float,
) -> Assessment:
    estimate = _gateway_floor_s(inflight, limits, engines, tracks)
    if estimate is not None:
        over = estimate > objective.ttft_slo_s
        clear = estimate < objective.ttft_slo_s * leave_ratio
    else:
        slots = limits.batch_capacity * engines
        over = inflight > slots + limits.queue_threshold
        clear = inflight <= slots
    return Assessment(estimate, TELEMETRY_UNKNOWN, over, clear)


def assess(
    objective: RouteObjective,
    snapshot: CapacitySnapshot,
    tracks: Mapping[tuple[str, str], EngineTrack],
    now: float,
    config: OverflowConfig,
) -> Assessment:
    backend = objective.backend
    limits = config.backends[backend]
    inflight = snapshot.inflight.get(backend, 0)
    engines = max(1, len(snapshot.engines.get(backend, ())))
    mine = {url: t for (b, url), t in tracks.items() if b == backend}
    fresh = snapshot.fresh_engines(backend, now, config.stale_after_s)
    if not fresh:
        return _assess_unknown(objective, limits, engines, inflight, list(mine.values()),
                               config.leave_ratio)
    gpu_saturated = limits.uses_gpu and _gpu_saturated(snapshot, now, config)
    estimate = estimate_wait_s(fresh, mine, inflight, limits, gpu_saturated=gpu_saturated)
    kv = max((r.kv_cache_usage for r in fresh if r.kv_cache_usage is not None), default=None)
    slo = objective.ttft_slo_s
    kv_clear = kv is None or kv < config.kv_clear
    if kv is not None and kv >= config.kv_high:
        return Assessment(estimate, OVERFLOW_KV_CACHE, over=True, clear=False)
    if estimate is None:  # queueing at a rate never measured: the depth rule of unknowns
        depth = max(sum((r.running or 0) + (r.waiting or 0) for r in fresh), inflight)
        slots = limits.batch_capacity * len(fresh)
        over = depth > slots + limits.queue_threshold
        return Assessment(None, OVERFLOW_QUEUE if over else LOCAL_OK, over,
                          clear=depth <= slots and kv_clear)
    if estimate > slo:
        plain = estimate_wait_s(fresh, mine, inflight, limits) if gpu_saturated else estimate
        reason = OVERFLOW_GPU if plain is not None and plain <= slo else OVERFLOW_QUEUE
        return Assessment(estimate, reason, over=True, clear=False)
    clear = estimate < slo * config.leave_ratio and kv_clear
    return Assessment(estimate, LOCAL_OK, over=False, clear=clear)


def _gpu_saturated(snapshot: CapacitySnapshot, now: float, config: OverflowConfig) -> bool:
    gpus = snapshot.fresh_gpus(now, config.stale_after_s)
    return bool(gpus) and all(g.utilization_ratio >= config.gpu_util_high for g in gpus)


# --- hysteresis -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpillState:
    spilling: bool = False
    changed_at: float = -math.inf
    reason: str = TELEMETRY_UNKNOWN
    estimate_s: float | None = None

    def verdict(self) -> Verdict:
        return Verdict(self.spilling, self.reason, self.estimate_s)


def step(prev: SpillState, a: Assessment, now: float, min_dwell_s: float) -> SpillState:
    """Next spill state. Any change waits min_dwell_s after the previous one."""
    settled = now - prev.changed_at >= min_dwell_s
    if prev.spilling:
        if a.clear and settled:
            return SpillState(False, now, RECOVERED, a.estimate_s)
        return SpillState(True, prev.changed_at, a.reason if a.over else prev.reason,
                          a.estimate_s)
    if a.over and settled:
        return SpillState(True, now, a.reason, a.estimate_s)
    # Not settled while local means recovered less than min_dwell_s ago: hold local.
    reason = a.reason if settled else RECOVERED
    return SpillState(False, prev.changed_at, reason, a.estimate_s)


# --- the whole state and its transition -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControllerState:
    tracks: Mapping[tuple[str, str], EngineTrack] = field(
        default_factory=lambda: MappingProxyType({})
    )
    spill: Mapping[tuple[str, str], SpillState] = field(
        default_factory=lambda: MappingProxyType({})
    )


def _advance_all(
    tracks: Mapping[tuple[str, str], EngineTrack], readings: Iterable[EngineReading],
    config: OverflowConfig,
) -> dict[tuple[str, str], EngineTrack]:
    out = dict(tracks)
    for reading in readings:
        limits = config.backends.get(reading.backend)
        if limits is None:
            continue
        key = (reading.backend, reading.url)
        track = advance_track(out.get(key), reading, limits, config.ewma_alpha)
        if track is not None:
            out[key] = track
    return out


def transition(
    state: ControllerState, snapshot: CapacitySnapshot, now: float, config: OverflowConfig
) -> ControllerState:
    """The controller's next state: pure, so the whole policy is table-testable."""
    readings = (r for per_backend in snapshot.engines.values() for r in per_backend)
    tracks = _advance_all(state.tracks, readings, config)
    spill = {}
    for objective in config.routes:
        key = (objective.route, objective.backend)
        a = assess(objective, snapshot, tracks, now, config)
        spill[key] = step(state.spill.get(key, SpillState()), a, now, config.min_dwell_s)
    return ControllerState(MappingProxyType(tracks), MappingProxyType(spill))


class OverflowController:
    """Holds the latest ControllerState; `update` is called by the capacity monitor."""

    def __init__(self, config: OverflowConfig) -> None:
        self.config = config
        self.state = ControllerState()

    def update(self, snapshot: CapacitySnapshot, now: float) -> None:
        self.state = transition(self.state, snapshot, now, self.config)

    def verdict(self, route: str, backend: str) -> Verdict:
        state = self.state.spill.get((route, backend))
        return state.verdict() if state else Verdict(False, TELEMETRY_UNKNOWN, None)

    def verdicts(self) -> Mapping[tuple[str, str], Verdict]:
        return MappingProxyType({k: s.verdict() for k, s in self.state.spill.items()})
