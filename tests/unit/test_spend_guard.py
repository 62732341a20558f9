"""The spend guard's windows and its open/close rules, on a hand-moved clock."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.errors import ConfigError
from spillgate.settings import load_settings
from spillgate.tenancy.spend_guard import GuardConfig, GuardEvent, Limits, SpendGuard, SpendWindow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


NO_LIMITS = Limits()


def _guard(node: Limits = NO_LIMITS, per_key: Limits = NO_LIMITS, **config: object,
           ) -> tuple[SpendGuard, Clock, list[GuardEvent]]:
    clock, events = Clock(), []
    config.setdefault("window_s", 60.0)
    guard = SpendGuard(GuardConfig(node=node, per_key=per_key, **config),  # type: ignore[arg-type]
                       clock, events.append)
    return guard, clock, events


def _usd(text: str) -> Decimal:
    return Decimal(text)


def test_usd_limit_opens_then_closes_after_the_cool_down() -> None:
    guard, clock, events = _guard(Limits(limit_usd=_usd("1")), window_s=10, cooldown_s=30)
    guard.observe(None, _usd("0.6"))
    assert not guard.view(None).open
    clock.now = 5
    guard.observe(None, _usd("0.6"))  # $1.20 within 10 s
    view = guard.view(None)
    assert view.open and view.retry_after_s == 30
    assert [(e.opened, e.why, e.window_usd) for e in events] == [(True, "limit", _usd("1.2"))]
    clock.now = 20  # both amounts left the window, but the cool-down runs until 35
    assert guard.view(None).open
    clock.now = 35
    assert not guard.view(None).open
    assert [e.opened for e in events] == [True, False]  # one line each way, no flapping


def test_guard_stays_open_past_the_cool_down_while_spend_continues() -> None:
    guard, clock, events = _guard(Limits(limit_usd=_usd("1")), window_s=10, cooldown_s=5)
    for t in range(0, 30, 2):  # $0.50 every 2 s: $2.50 per window, all along
        clock.now = t
        guard.observe(None, _usd("0.5"))
    assert guard.view(None).open
    assert [e.opened for e in events] == [True]


def test_a_spending_key_trips_only_its_own_guard() -> None:
    guard, _, _ = _guard(per_key=Limits(limit_usd=_usd("1")), window_s=60)
    guard.observe("spender", _usd("2"))
    guard.observe("frugal", _usd("0.1"))
    assert guard.view("spender").open
    assert not guard.view("frugal").open
    assert not guard.view(None).open  # no node-wide limit configured
    assert guard.open_keys() == 1


def test_node_guard_applies_to_every_key() -> None:
    guard, _, _ = _guard(Limits(limit_usd=_usd("1")), window_s=60)
    guard.observe("a", _usd("0.6"))
    guard.observe("b", _usd("0.6"))
    assert guard.view("c").open and guard.view(None).open


def _steady_then_spike(multiple: str, spike: int, min_usd: str = "0") -> tuple[
        SpendGuard, Clock, list[GuardEvent]]:
    """$0.01/s for ten 10-s windows, then `spike` times that rate."""
    guard, clock, events = _guard(Limits(baseline_multiple=_usd(multiple)), window_s=10,
                                  baseline_windows=10, min_usd=_usd(min_usd), cooldown_s=60)
    for t in range(100):
        clock.now = t + 0.5
        guard.observe(None, _usd("0.01"))
        assert not guard.view(None).open, f"tripped at a steady rate (t={clock.now})"
    for t in range(100, 120):
        clock.now = t + 0.5
        for _ in range(spike):
            guard.observe(None, _usd("0.01"))
    return guard, clock, events


def test_a_tenfold_spike_trips_the_baseline_rule_within_two_windows() -> None:
    _, _, events = _steady_then_spike("3", spike=10)
    assert events and events[0].why == "baseline"
    assert events[0].at - 100 <= 2 * 10
    # Independent check: the window that tripped it spent more than 3x the steady $0.10.
    assert events[0].window_usd > 3 * _usd("0.10")


def test_a_spike_under_the_multiple_does_not_trip() -> None:
    _, _, events = _steady_then_spike("3", spike=2)
    assert events == []


def test_min_usd_keeps_small_amounts_from_tripping_a_zero_baseline() -> None:
    guard, clock, events = _guard(Limits(baseline_multiple=_usd("3")), window_s=10,
                                  min_usd=_usd("0.05"))
    clock.now = 50  # five silent windows: a baseline of zero
    guard.observe(None, _usd("0.01"))
    assert not guard.view(None).open
    guard.observe(None, _usd("0.05"))
    assert guard.view(None).open and events[0].why == "baseline"


def test_guard_without_limits_is_off() -> None:
    guard, _, events = _guard()
    guard.observe("k", _usd("1000"))
    assert not guard.enabled and not guard.view("k").open and events == []


events_strategy = st.lists(
    st.tuples(st.floats(0, 100, allow_nan=False), st.integers(1, 10_000)), max_size=60)


@given(events=events_strategy, window=st.floats(0.5, 20), windows=st.integers(1, 5),
       look=st.floats(0, 150))
def test_window_sums_equal_a_recount(events: list[tuple[float, int]], window: float,
                                     windows: int, look: float) -> None:
    """The running sums equal a direct sum over the events of each span, whatever the
    arrival times (in order) and the moment of looking."""
    sw = SpendWindow(window, windows, started_at=0.0)
    ordered = sorted(events)
    now = max([look, *(t for t, _ in ordered)])
    for t, cents in ordered:
        sw.add(t, Decimal(cents) / 100)
    recent = sum((Decimal(c) / 100 for t, c in ordered if t > now - window), Decimal(0))
    older = sum((Decimal(c) / 100 for t, c in ordered
                 if now - window - window * windows < t <= now - window), Decimal(0))
    assert sw.current(now) == recent
    span = min(window * windows, now - window)
    baseline = sw.baseline(now)
    if span < window:
        assert baseline is None
    else:
        assert baseline == older * Decimal(repr(window)) / Decimal(repr(span))


def test_baseline_rule_without_a_floor_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"spend_guard\.min_usd"):
        load_settings(None, {"spend_guard": {"node": {"baseline_multiple": 3}}})
    settings = load_settings(None, {"spend_guard": {"min_usd": "0.5",
                                                    "node": {"baseline_multiple": 3}}})
    assert GuardConfig.from_settings(settings.spend_guard).node.baseline_multiple == 3
