"""Cost clock: busy/idle accrual, attribution by tokens, and exact conservation of money."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.costing.costclock import CostClock, RateFn
from spillgate.costing.hardware import cost_rate_usd_per_s, load_profiles

MODELS = Path(__file__).resolve().parents[2] / "models"


class FakeTime:
    """A hand-driven monotonic clock and wall clock (wall = 1_700_000_000 + monotonic)."""

    def __init__(self) -> None:
        self.now = 0.0

    def mono(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000 + self.now


def flat(rate: str) -> RateFn:
    value = Decimal(rate)
    return lambda _watts: value


def make(t: FakeTime, rate: str = "0.001", quantum: str = "1e-12", profile: str = "") -> CostClock:
    return CostClock(
        flat(rate), clock=t.mono, wall=t.wall, quantum=Decimal(quantum), profile=profile
    )


def test_time_with_nothing_in_flight_is_idle() -> None:
    t = FakeTime()
    clock = make(t)
    t.now = 10.0
    clock.tick()
    assert clock.totals.idle_usd == Decimal("0.01")
    assert clock.totals.idle_s == 10.0
    assert clock.totals.busy_usd == 0


def test_a_request_pays_only_for_its_own_time() -> None:
    t = FakeTime()
    clock = make(t)
    t.now = 5.0  # idle before it starts
    clock.begin("a")
    t.now = 6.0
    clock.tick()
    t.now = 7.5
    assert clock.finish("a") == Decimal("0.0025")
    t.now = 9.0
    clock.tick()
    assert clock.totals.busy_usd == Decimal("0.0025")
    assert clock.totals.idle_usd == Decimal("0.0065")  # 5 s before + 1.5 s after


def test_busy_cost_is_split_by_tokens_processed_in_the_interval() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("a")
    clock.begin("b")
    clock.add_tokens("a", 300)
    clock.add_tokens("b", 100)
    t.now = 1.0
    clock.tick()
    clock.add_tokens("b", 50)  # in the second second only b generates
    t.now = 2.0
    assert clock.finish("a") == Decimal("0.00075")
    assert clock.finish("b") == Decimal("0.00125")  # 0.00025 + the whole second second


def test_no_token_reports_split_evenly_and_the_remainder_goes_to_the_last() -> None:
    t = FakeTime()
    clock = make(t, rate="0.10", quantum="0.01")
    for rid in ("a", "b", "c"):
        clock.begin(rid)
    t.now = 1.0
    clock.tick()  # 0.10 in three: 0.03 each, 0.01 left for the last to settle
    assert [clock.finish(r) for r in ("a", "b", "c")] == [
        Decimal("0.03"),
        Decimal("0.03"),
        Decimal("0.04"),
    ]


def test_measured_power_feeds_the_rate_and_the_period() -> None:
    t = FakeTime()
    seen: list[float | None] = []

    def rate(watts: float | None) -> Decimal:
        seen.append(watts)
        return Decimal("0.001")

    readings = iter([300.0, 500.0])
    clock = CostClock(rate, power=lambda: next(readings), clock=t.mono, wall=t.wall, profile="p")
    t.now = 1.0
    clock.tick()
    t.now = 4.0
    clock.tick()
    period = clock.drain_period()
    assert seen == [300.0, 500.0]
    assert period.power_watts == pytest.approx((300.0 * 1 + 500.0 * 3) / 4)


def test_drain_period_reports_and_resets() -> None:
    t = FakeTime()
    clock = make(t, profile="cpu-node")
    clock.begin("a")
    t.now = 2.0
    clock.finish("a")
    t.now = 5.0
    first = clock.drain_period()
    assert first.started_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert first.ended_at == datetime.fromtimestamp(1_700_000_005, UTC)
    assert (first.busy_s, first.idle_s) == (2.0, 3.0)
    assert (first.busy_usd, first.idle_usd) == (Decimal("0.002"), Decimal("0.003"))
    assert first.profile == "cpu-node" and first.power_watts is None
    t.now = 6.0
    second = clock.drain_period()
    assert second.started_at == first.ended_at
    assert (second.busy_usd, second.idle_usd, second.idle_s) == (0, Decimal("0.001"), 1.0)
    assert clock.totals.idle_usd == Decimal("0.004")  # lifetime totals keep going


def test_clock_for_a_profile_charges_the_profile_rate() -> None:
    profile = load_profiles(MODELS / "hardware.yaml")["h100-sxm-owned"]
    t = FakeTime()
    clock = CostClock.for_profile(profile, 2, power=lambda: 900.0, clock=t.mono, wall=t.wall)
    clock.begin("a")
    t.now = 1.0
    expected = cost_rate_usd_per_s(profile, 2, 900.0).quantize(Decimal("1e-12"))
    assert clock.finish("a") == expected
    assert clock.drain_period().profile == "h100-sxm-owned"


def test_misuse_is_refused_and_late_tokens_are_ignored() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("a")
    with pytest.raises(ValueError):
        clock.begin("a")
    with pytest.raises(ValueError):
        clock.add_tokens("a", -1)
    clock.finish("a")
    clock.add_tokens("a", 10)  # usage reported after finish: nothing to charge
    assert clock.finish("a") == 0
    assert clock.in_flight() == 0


ops = st.lists(
    st.one_of(
        st.tuples(st.just("begin"), st.integers(0, 5)),
        st.tuples(st.just("plain"), st.integers(0, 5)),
        st.tuples(st.just("abandon"), st.integers(0, 5)),
        st.tuples(st.just("external"), st.integers(0, 3)),
        st.tuples(st.just("tokens"), st.integers(0, 5), st.integers(0, 500),
                  st.integers(0, 2000)),
        # the engine's counts at settle: a plain request's work, a stream's prompt (or none)
        st.tuples(st.just("finish"), st.integers(0, 5), st.none() | st.integers(0, 5000)),
        st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, rate=st.decimals("0.000001", "0.01", places=9), power=st.floats(0, 1000))
def test_attributed_plus_idle_equals_accrued_exactly(
    ops: list[tuple[object, ...]], rate: Decimal, power: float
) -> None:
    t = FakeTime()
    charged: list[Decimal] = []
    clock = CostClock(
        lambda watts: rate * (1 + Decimal(repr(watts or 0)) / 1000),
        power=lambda: power,
        clock=t.mono,
        wall=t.wall,
    )
    live: set[str] = set()
    others = [0]
    clock.external = lambda: others[0]
    for op in ops:
        kind, *args = op
        if kind == "tick":
            t.now += float(str(args[0]))
            clock.tick()
            continue
        if kind == "external":
            others[0] = int(str(args[0]))
            continue
        rid = f"r{args[0]}"
        if kind in ("begin", "plain") and rid not in live:
            clock.begin(rid, opaque=kind == "plain")
            live.add(rid)
        elif kind == "abandon" and rid in live:
            clock.abandon(rid)
            live.discard(rid)
        elif kind == "tokens":
            clock.add_tokens(rid, int(str(args[1])), prompt_estimate=int(str(args[2])))
        elif kind == "finish" and rid in live:
            t.now += 0.25
            count = None if args[1] is None else int(str(args[1]))
            charged.append(clock.finish(rid, work_tokens=count, prompt_tokens=count))
            live.discard(rid)
    t.now += 1.0
    charged.extend(clock.finish(rid) for rid in sorted(live))
    total = clock.totals
    assert all(c >= 0 for c in charged)
    # every busy quantum is either charged to a request or kept as other clients' share
    assert sum(charged, Decimal(0)) + total.unattributed_usd == total.busy_usd
    period = clock.drain_period()
    assert period.busy_usd + period.idle_usd == total.busy_usd + total.idle_usd
    # accrued money tracks rate * time to within one quantum per interval
    seconds = Decimal(repr(total.busy_s + total.idle_s))
    per_s = rate * (1 + Decimal(repr(power)) / 1000)
    assert abs(total.busy_usd + total.idle_usd - per_s * seconds) < Decimal("1e-9")


def test_a_plain_request_takes_an_even_share_and_streams_split_the_rest_by_tokens() -> None:
    t = FakeTime()
    clock = make(t, rate="0.003")
    clock.begin("plain", opaque=True)  # progress unknown until it settles
    clock.begin("s1")
    clock.begin("s2")
    clock.add_tokens("s1", 300)
    clock.add_tokens("s2", 100)
    t.now = 1.0
    assert clock.finish("plain") == Decimal("0.001")  # 1/3 of the second
    assert clock.finish("s1") == Decimal("0.0015")  # 3/4 of the streams' 2/3
    assert clock.finish("s2") == Decimal("0.0005")


def test_other_clients_on_the_engine_make_the_node_busy_without_charging_anyone() -> None:
    t = FakeTime()
    others = [2]
    clock = make(t)
    clock.external = lambda: others[0]
    t.now = 4.0
    clock.tick()  # only other clients: busy, nobody here pays
    clock.begin("a", opaque=True)
    t.now = 7.0
    assert clock.finish("a") == Decimal("0.001")  # one of three sequences running for 3 s
    others[0] = 0
    t.now = 8.0
    period = clock.drain_period()
    assert (period.busy_s, period.idle_s, period.external_s) == (7.0, 1.0, 4.0)
    assert period.busy_usd == Decimal("0.007")
    assert period.unattributed_usd == Decimal("0.006")  # 4 s alone + 2/3 of 3 s


def test_a_request_that_leaves_for_a_paid_api_leaves_its_share_unattributed() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("spilled", opaque=True)
    t.now = 1.5
    clock.abandon("spilled")
    assert not clock.has("spilled") and clock.finish("spilled") == 0
    period = clock.drain_period()
    assert (period.busy_s, period.busy_usd, period.unattributed_usd) == (
        1.5, Decimal("0.0015"), Decimal("0.0015"))


def test_periods_say_how_long_measured_power_priced_the_energy() -> None:
    t = FakeTime()
    readings: list[float | None] = [None, 400.0, None]
    clock = make(t)
    clock.power = lambda: readings.pop(0)
    for now in (2.0, 3.0, 6.0):  # nominal for 2 s, measured for 1 s, nominal for 3 s
        t.now = now
        clock.tick()
    period = clock.drain_period()
    assert period.measured_s == 1.0 and period.power_watts == 400.0


# --- corrections when the engine's counts arrive ---------------------------------------------
def test_a_plain_requests_even_share_is_corrected_by_its_tokens_at_settle() -> None:
    t = FakeTime()
    clock = make(t)  # 0.001 USD a second
    clock.begin("plain", opaque=True)
    clock.begin("stream")
    clock.add_tokens("stream", 10)
    t.now = 1.0
    clock.tick()  # even for now: 0.0005 each
    clock.add_tokens("stream", 10)
    t.now = 2.0
    # The plain request did 60 tokens in its 2 s (30 a second, by an even spread over its
    # time), the stream 10 a second: 3/4 and 1/4 of each of the two seconds.
    plain = clock.finish("plain", work_tokens=60)
    t.now = 3.0  # then the stream is alone for a second
    stream = clock.finish("stream", prompt_tokens=0)
    assert plain == Decimal("0.001") * 2 * 30 / 40
    assert stream == Decimal("0.001") * 2 * 10 / 40 + Decimal("0.001")
    assert plain + stream == clock.totals.busy_usd


def test_a_settled_requests_cost_never_changes_afterwards() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("plain", opaque=True)
    clock.begin("stream")
    clock.add_tokens("stream", 1)
    t.now = 1.0
    stream = clock.finish("stream")  # told to its client already: final
    t.now = 2.0
    plain = clock.finish("plain", work_tokens=1000)
    assert stream == Decimal("0.0005")  # the even split of the first second stands
    assert plain == Decimal("0.0015")  # its even half of it plus the second alone
    assert stream + plain == clock.totals.busy_usd


def test_a_streams_prompt_estimate_is_replaced_by_the_engines_count() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("a")
    clock.begin("b")
    clock.add_tokens("a", 1, prompt_estimate=100)  # first output: prompt counted as bytes/4
    clock.add_tokens("b", 1, prompt_estimate=100)
    t.now = 1.0
    clock.tick()  # 101 vs 101: even for now
    clock.add_tokens("a", 1)
    clock.add_tokens("b", 1)
    t.now = 2.0
    a = clock.finish("a", prompt_tokens=1000)  # the engine prefilled 1000 for a
    b = clock.finish("b", prompt_tokens=100)
    first_a = Decimal("0.001") * 1001 / 1102  # a's prefill second, by the true counts
    assert abs(a - (first_a + Decimal("0.0005"))) <= Decimal("2e-12")
    assert a + b == clock.totals.busy_usd


def test_a_stream_ending_in_its_prefill_interval_is_weighted_by_the_true_prompt() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("a")
    clock.begin("b")
    clock.add_tokens("a", 3, prompt_estimate=10)
    clock.add_tokens("b", 3, prompt_estimate=10)
    t.now = 1.0
    a = clock.finish("a", prompt_tokens=397)  # 400 tokens against b's 13
    assert abs(a - Decimal("0.001") * 400 / 413) <= Decimal("2e-12")
    t.now = 1.0  # b ends at the same instant: nothing left to split again
    assert clock.finish("b", prompt_tokens=10) + a == clock.totals.busy_usd


def test_a_streams_prompt_is_spread_over_its_time_before_the_first_output() -> None:
    t = FakeTime()
    clock = make(t)
    clock.begin("plain", opaque=True)  # no prompt to speak of
    clock.begin("stream")
    t.now = 1.0
    clock.tick()  # nobody reported anything: even for now
    t.now = 2.0
    clock.add_tokens("stream", 1, prompt_estimate=99)  # it was prefilling all along
    t.now = 3.0  # then both decode one token a step: the plain one as the mean stream
    clock.tick()
    stream = clock.finish("stream", prompt_tokens=99)
    plain = clock.finish("plain")
    assert stream == Decimal("0.002") + Decimal("0.0005")
    assert plain == Decimal("0.0005")
