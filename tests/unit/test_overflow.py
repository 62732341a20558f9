"""Overflow controller: table tests of the pure transition, hysteresis, stale data, property."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.errors import ConfigError
from spillgate.routing.overflow import (
    LOCAL_OK,
    OVERFLOW_GPU,
    OVERFLOW_KV_CACHE,
    OVERFLOW_QUEUE,
    RECOVERED,
    TELEMETRY_UNKNOWN,
    BackendLimits,
    ControllerState,
    OverflowConfig,
    OverflowController,
    RouteObjective,
    transition,
)
from spillgate.telemetry.engine_metrics import parse_vllm
from spillgate.telemetry.snapshot import (
    CapacitySnapshot,
    EngineReading,
    GpuReading,
    HistogramSummary,
)

URL = "http://127.0.0.1:8081/metrics"
SLO = 2.0
CPU = BackendLimits(batch_capacity=4, queue_threshold=8)
GPU = BackendLimits(batch_capacity=8, queue_threshold=16, uses_gpu=True)
CONFIG = OverflowConfig(
    routes=(RouteObjective("chat", "cpu", SLO), RouteObjective("big", "gpu", SLO)),
    backends={"cpu": CPU, "gpu": GPU},
    min_dwell_s=5.0,
    stale_after_s=3.0,
)


@dataclass
class Engine:
    """A scripted engine: cumulative TTFT histogram advanced by admissions."""

    backend: str = "cpu"
    url: str = URL
    count: float = 0.0
    total: float = 0.0

    def read(self, at: float, *, running: float = 0, waiting: float = 0, admitted: int = 0,
             ttft: float = 0.25, kv: float | None = None) -> EngineReading:
        self.count += admitted
        self.total += admitted * ttft
        hist = HistogramSummary(((1.0, self.count), (math.inf, self.count)), self.total,
                                self.count)
        return EngineReading(self.backend, self.url, True, at, running=running, waiting=waiting,
                             kv_cache_usage=kv, ttft=hist)


def snap(*readings: EngineReading, at: float, inflight: int = 0,
         gpus: tuple[GpuReading, ...] = ()) -> CapacitySnapshot:
    engines: dict[str, tuple[EngineReading, ...]] = {}
    for r in readings:
        engines[r.backend] = (*engines.get(r.backend, ()), r)
    backend = readings[0].backend if readings else "cpu"
    return CapacitySnapshot(gpus=gpus, engines=engines, inflight={backend: inflight},
                            nvml_available=bool(gpus), taken_at=at)


def warmed(ctl: OverflowController, engine: Engine) -> None:
    """t=0..2: base TTFT 0.25 s measured unqueued, then 2 admissions/s measured while queued."""
    ctl.update(snap(engine.read(0.0, running=2), at=0.0), 0.0)
    ctl.update(snap(engine.read(1.0, running=2, admitted=2, ttft=0.25), at=1.0), 1.0)
    ctl.update(snap(engine.read(2.0, running=4, waiting=1, admitted=2, ttft=0.25), at=2.0), 2.0)


def test_idle_engine_is_local_ok() -> None:
    ctl = OverflowController(CONFIG)
    ctl.update(snap(Engine().read(0.0), at=0.0), 0.0)
    v = ctl.verdict("chat", "cpu")
    assert (v.spill, v.reason, v.estimate_s) == (False, LOCAL_OK, 0.0)


def test_queue_beyond_objective_spills_with_estimate_from_measured_rate() -> None:
    ctl, engine = OverflowController(CONFIG), Engine()
    warmed(ctl, engine)
    assert ctl.verdict("chat", "cpu").reason == LOCAL_OK  # 0.25 + (1+1)/2 = 1.25 s < 2 s
    ctl.update(snap(engine.read(3.0, running=4, waiting=3, admitted=2), at=3.0), 3.0)
    v = ctl.verdict("chat", "cpu")
    assert (v.spill, v.reason) == (True, OVERFLOW_QUEUE)
    assert v.estimate_s == pytest.approx(0.25 + (3 + 1) / 2.0)


def test_high_kv_cache_spills_even_without_queue() -> None:
    ctl = OverflowController(CONFIG)
    ctl.update(snap(Engine().read(0.0, running=1, kv=0.95), at=0.0), 0.0)
    assert ctl.verdict("chat", "cpu").spill
    assert ctl.verdict("chat", "cpu").reason == OVERFLOW_KV_CACHE


def test_kv_cache_under_deprecated_vllm_name_counts() -> None:
    text = ("vllm:num_requests_running{model_name=\"m\"} 1.0\n"
            "vllm:num_requests_waiting{model_name=\"m\"} 0.0\n"
            "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.91\n")
    ctl = OverflowController(CONFIG)
    ctl.update(snap(parse_vllm(text, backend="gpu", url=URL, at=0.0), at=0.0), 0.0)
    assert ctl.verdict("big", "gpu").reason == OVERFLOW_KV_CACHE


def _gpus(util: float, at: float) -> tuple[GpuReading, ...]:
    return (GpuReading(0, util, 70 << 30, 80 << 30, 650.0, 70.0, at),)


@pytest.mark.parametrize(("util", "reason"), [(0.99, OVERFLOW_GPU), (0.5, LOCAL_OK)])
def test_saturated_gpu_removes_free_batch_slots(util: float, reason: str) -> None:
    engine, ctl = Engine(backend="gpu"), OverflowController(replace(CONFIG, min_dwell_s=0.0))
    # rate measured while queued (0.5/s, then 0.35/s after an idle second), base TTFT 1.0 s
    ctl.update(snap(engine.read(0.0, running=8, waiting=1), at=0.0), 0.0)
    ctl.update(snap(engine.read(2.0, running=8, waiting=1, admitted=1, ttft=1.5), at=2.0), 2.0)
    ctl.update(snap(engine.read(3.0, running=2), at=3.0), 3.0)
    ctl.update(snap(engine.read(4.0, running=2, admitted=1, ttft=1.0), at=4.0), 4.0)
    ctl.update(snap(engine.read(5.0, running=2), gpus=_gpus(util, 5.0), at=5.0), 5.0)
    v = ctl.verdict("big", "gpu")
    assert v.reason == reason and v.spill is (reason == OVERFLOW_GPU)


def test_stale_gpu_readings_are_ignored() -> None:
    engine, ctl = Engine(backend="gpu"), OverflowController(CONFIG)
    ctl.update(snap(engine.read(10.0, running=2), gpus=_gpus(1.0, 0.0), at=10.0), 10.0)
    assert ctl.verdict("big", "gpu").reason == LOCAL_OK


def test_stale_telemetry_without_rate_does_not_spill_below_capacity_plus_queue() -> None:
    ctl = OverflowController(CONFIG)
    old = Engine().read(0.0, running=4, waiting=6)
    limit = CPU.batch_capacity + CPU.queue_threshold
    ctl.update(snap(old, at=10.0, inflight=limit), 10.0)
    v = ctl.verdict("chat", "cpu")
    assert (v.spill, v.reason, v.estimate_s) == (False, TELEMETRY_UNKNOWN, None)
    ctl.update(snap(old, at=11.0, inflight=limit + 1), 11.0)
    assert ctl.verdict("chat", "cpu").spill


def test_failed_scrape_uses_inflight_and_last_known_rate() -> None:
    ctl, engine = OverflowController(CONFIG), Engine()
    warmed(ctl, engine)  # rate 2/s, base 0.25 s
    failed = EngineReading.failed("cpu", URL, 2.5, "connection refused")
    ctl.update(snap(failed, at=2.5, inflight=5), 2.5)
    v = ctl.verdict("chat", "cpu")
    assert (v.spill, v.reason) == (False, TELEMETRY_UNKNOWN)
    assert v.estimate_s == pytest.approx(0.25 + (5 - 4 + 1) / 2.0)
    ctl.update(snap(failed, at=2.6, inflight=9), 2.6)  # 0.25 + 6/2 > 2
    assert ctl.verdict("chat", "cpu").spill


def test_gateway_inflight_is_a_floor_on_fresh_engine_readings() -> None:
    ctl, engine = OverflowController(CONFIG), Engine()
    warmed(ctl, engine)
    ctl.update(snap(engine.read(3.0, running=1, admitted=2), at=3.0, inflight=12), 3.0)
    v = ctl.verdict("chat", "cpu")
    assert v.reason == OVERFLOW_QUEUE and v.estimate_s == pytest.approx(0.25 + 9 / 2.0)


def test_queue_at_never_measured_rate_uses_depth_rule() -> None:
    ctl = OverflowController(CONFIG)
    ctl.update(snap(Engine().read(0.0, running=4, waiting=8), at=0.0), 0.0)
    assert ctl.verdict("chat", "cpu").reason == LOCAL_OK
    ctl.update(snap(Engine().read(1.0, running=4, waiting=9), at=1.0), 1.0)
    assert ctl.verdict("chat", "cpu").reason == OVERFLOW_QUEUE


def test_least_loaded_engine_counts() -> None:
    busy, idle = Engine(url="http://127.0.0.1:1/metrics"), Engine(url="http://127.0.0.1:2/metrics")
    ctl = OverflowController(CONFIG)
    ctl.update(snap(busy.read(0.0, kv=0.5, running=4, waiting=20), idle.read(0.0), at=0.0), 0.0)
    assert ctl.verdict("chat", "cpu").reason == LOCAL_OK


def test_no_flapping_when_estimate_oscillates_around_objective() -> None:
    ctl, engine = OverflowController(CONFIG), Engine()
    warmed(ctl, engine)  # rate 2/s: waiting w gives 0.25 + (w+1)/2
    toggles, spilling, t = 0, False, 2.0
    for i in range(40):
        t += 1.0
        waiting = 3 if i % 2 == 0 else 2  # 2.25 s and 1.75 s around the 2 s objective
        ctl.update(snap(engine.read(t, running=4, waiting=waiting, admitted=2), at=t), t)
        now = ctl.verdict("chat", "cpu").spill
        toggles += now != spilling
        spilling = now
    assert (toggles, spilling) == (1, True)


def test_recovery_after_dwell_then_local_ok() -> None:
    ctl, engine = OverflowController(CONFIG), Engine()
    warmed(ctl, engine)
    ctl.update(snap(engine.read(3.0, running=4, waiting=5, admitted=2), at=3.0), 3.0)
    assert ctl.verdict("chat", "cpu").spill
    reasons = []
    for t in (4.0, 6.0, 8.0, 10.0, 12.0, 14.0):
        ctl.update(snap(engine.read(t, running=0, admitted=2), at=t), t)
        reasons.append((t, ctl.verdict("chat", "cpu").spill, ctl.verdict("chat", "cpu").reason))
    assert reasons == [
        (4.0, True, OVERFLOW_QUEUE), (6.0, True, OVERFLOW_QUEUE),  # held for min_dwell_s
        (8.0, False, RECOVERED), (10.0, False, RECOVERED), (12.0, False, RECOVERED),
        (14.0, False, LOCAL_OK),
    ]


def test_recovered_holds_local_for_dwell_even_if_load_returns() -> None:
    ctl, engine = OverflowController(CONFIG), Engine()
    warmed(ctl, engine)
    ctl.update(snap(engine.read(3.0, running=4, waiting=5, admitted=2), at=3.0), 3.0)
    ctl.update(snap(engine.read(8.0, running=0, admitted=2), at=8.0), 8.0)
    ctl.update(snap(engine.read(9.0, running=4, waiting=9, admitted=2), at=9.0), 9.0)
    assert ctl.verdict("chat", "cpu").spill is False
    ctl.update(snap(engine.read(13.0, running=4, waiting=9, admitted=2), at=13.0), 13.0)
    assert ctl.verdict("chat", "cpu").spill is True


def test_transition_is_pure() -> None:
    engine = Engine()
    s1 = snap(engine.read(0.0, running=4, waiting=9, kv=0.95), at=0.0)
    start = ControllerState()
    a = transition(start, s1, 0.0, CONFIG)
    b = transition(start, s1, 0.0, CONFIG)
    assert a == b and start == ControllerState() and a.spill[("chat", "cpu")].spilling


def test_unknown_route_and_bad_config() -> None:
    assert OverflowController(CONFIG).verdict("nope", "cpu").reason == TELEMETRY_UNKNOWN
    with pytest.raises(ConfigError):
        OverflowConfig(routes=(RouteObjective("r", "missing", 1.0),), backends={})
    with pytest.raises(ConfigError):
        replace(CONFIG, leave_ratio=1.5)


SPILL_REASONS = (OVERFLOW_QUEUE, OVERFLOW_KV_CACHE, OVERFLOW_GPU, TELEMETRY_UNKNOWN)
step_st = st.tuples(
    st.floats(0.05, 3.0),  # seconds since previous update
    st.integers(0, 30),  # waiting
    st.integers(0, 6),  # admitted
    st.one_of(st.none(), st.floats(0.0, 1.0)),  # kv usage
    st.booleans(),  # scrape ok
    st.integers(0, 40),  # gateway in-flight
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step_st, min_size=2, max_size=60))
def test_spill_state_never_toggles_twice_within_min_dwell(
    steps: list[tuple[float, int, int, float | None, bool, int]],
) -> None:
    ctl, engine, t = OverflowController(CONFIG), Engine(), 0.0
    toggled_at: list[float] = []
    spilling = False
    for dt, waiting, admitted, kv, ok, inflight in steps:
        t += dt
        reading = engine.read(t, running=4 if waiting else 2, waiting=waiting,
                              admitted=admitted, kv=kv)
        if not ok:
            reading = EngineReading.failed("cpu", URL, t, "refused")
        ctl.update(snap(reading, at=t, inflight=inflight), t)
        v = ctl.verdict("chat", "cpu")
        allowed = SPILL_REASONS if v.spill else (LOCAL_OK, RECOVERED, TELEMETRY_UNKNOWN)
        assert v.reason in allowed
        if v.spill != spilling:
            toggled_at.append(t)
            spilling = v.spill
    gaps = [b - a for a, b in pairwise(toggled_at)]
    assert all(g >= CONFIG.min_dwell_s for g in gaps)
