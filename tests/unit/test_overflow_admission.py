"""The admission limit: how many requests a local backend may hold before `auto` spills."""

from __future__ import annotations

from spillgate.routing.admission import admit_limit
from spillgate.routing.overflow import BackendLimits, EngineTrack
from spillgate.telemetry.snapshot import EngineReading

LIMITS = BackendLimits(batch_capacity=4, queue_threshold=32)


def _track(rate: float | None, base: float | None) -> EngineTrack:
    reading = EngineReading(backend="b", url="u", ok=True, at=0.0, running=4, waiting=0)
    return EngineTrack(last=reading, rate_rps=rate, base_ttft_s=base)


def test_without_a_measured_rate_nothing_queues_on_a_guess() -> None:
    assert admit_limit(2.0, LIMITS, 1, []) == 4
    assert admit_limit(2.0, LIMITS, 1, [_track(None, 0.1)]) == 4
    assert admit_limit(2.0, LIMITS, 2, [_track(None, None)]) == 8


def test_littles_law_hand_computed() -> None:
    # 3 req/s, objective 2 s at 80% headroom = 1.6 s, base TTFT 0.1 s:
    # 1.5 s of queueing at 3 req/s = 4.5 → 4 queued requests beyond the 4 slots.
    assert admit_limit(2.0, LIMITS, 1, [_track(3.0, 0.1)], headroom=0.8) == 8


def test_rates_of_replicas_add_and_slowest_base_ttft_counts() -> None:
    tracks = [_track(2.0, 0.1), _track(2.0, 0.5)]
    # slots 8; slack 1.6 - 0.5 = 1.1 s at 4 req/s = 4.4 → 4
    assert admit_limit(2.0, LIMITS, 2, tracks, headroom=0.8) == 12


def test_objective_tighter_than_base_ttft_leaves_only_the_slots() -> None:
    assert admit_limit(0.2, LIMITS, 1, [_track(5.0, 0.5)]) == 4


def test_the_limit_grows_with_the_objective() -> None:
    tracks = [_track(3.0, 0.2)]
    limits = [admit_limit(slo, LIMITS, 1, tracks) for slo in (0.5, 1, 2, 4, 8)]
    assert limits == sorted(limits) and limits[0] < limits[-1]
