"""The cost clock against its pre-change algorithm (tests/reference_costclock.py): the same
events give the same Decimal for every request and the same totals, to the last quantum."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import astuple
from decimal import Decimal
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.costing import attribution
from spillgate.costing.costclock import CostClock
from tests import reference_costclock as reference

Op = tuple[object, ...]
RID = st.integers(0, 3)  # few ids: most events reach a request in flight
TOKENS = st.integers(0, 300)
COUNT = st.none() | st.integers(0, 5000)
WAIT = st.sampled_from([0.0, 0.25, 1.0]) | st.floats(0.0, 2.0)  # time before the event

ops = st.lists(
    st.tuples(
        WAIT,
        st.one_of(
            st.tuples(st.just("begin"), RID, st.booleans(), TOKENS),
            st.tuples(st.just("tokens"), RID, st.integers(0, 40), TOKENS),
            st.tuples(st.just("finish"), RID, COUNT),
            st.tuples(st.just("abandon"), RID),
            st.tuples(st.just("tick")),
            st.tuples(st.just("external"), st.integers(0, 3)),
            st.tuples(st.just("power"), st.none() | st.floats(0, 700)),
        ),
    ),
    max_size=100,
)


class Pair:
    """The clock under test and the oracle on one hand-driven clock and the same feeds."""

    def __init__(self, rate: Decimal) -> None:
        self.now = 0.0
        self.others = 0
        self.watts: float | None = None

        def price(watts: float | None) -> Decimal:
            return rate * (1 + Decimal(repr(watts or 0)) / 1000)

        def feeds() -> dict[str, object]:
            return {"power": lambda: self.watts, "external": lambda: self.others,
                    "clock": lambda: self.now}  # fmt: skip

        self.new = CostClock(price, **feeds())  # type: ignore[arg-type]
        self.old = reference.CostClock(price, **feeds())  # type: ignore[arg-type]
        self.charged: list[Decimal] = []

    def both(self, method: str, *args: object, **kwargs: object) -> None:
        got = getattr(self.new, method)(*args, **kwargs)
        want = getattr(self.old, method)(*args, **kwargs)
        assert got == want and type(got) is type(want), (method, args, kwargs, got, want)
        if isinstance(got, Decimal):
            self.charged.append(got)

    def apply(self, wait: float, op: Op) -> None:
        self.now += wait
        kind, *args = op
        if kind == "tick":
            self.both("tick")
        elif kind == "external":
            self.others = int(str(args[0]))
        elif kind == "power":
            self.watts = None if args[0] is None else float(str(args[0]))
        else:
            self.request(kind, f"r{args[0]}", args[1:])

    def request(self, kind: object, rid: str, args: list[object]) -> None:
        if kind == "begin" and not self.old.has(rid):
            self.both("begin", rid, opaque=bool(args[0]), prompt_estimate=int(str(args[1])))
        elif kind == "tokens":
            self.both("add_tokens", rid, int(str(args[0])), prompt_estimate=int(str(args[1])))
        elif kind == "finish":
            count = None if args[0] is None else int(str(args[0]))
            self.both("finish", rid, work_tokens=count, prompt_tokens=count)
        elif kind == "abandon" and self.old.has(rid):
            self.both("abandon", rid)
        assert self.new.has(rid) == self.old.has(rid)
        assert self.new.in_flight() == self.old.in_flight()

    def settle_all(self, live: Iterable[str]) -> None:
        self.now += 1.0
        for rid in live:
            self.both("finish", rid)

    def assert_same_totals(self) -> None:
        assert astuple(self.new.totals) == astuple(self.old.totals)
        total = self.new.totals
        assert sum(self.charged, Decimal(0)) + total.unattributed_usd == total.busy_usd


@settings(max_examples=300, deadline=None)
@given(ops=ops, rate=st.decimals("0.000001", "0.01", places=9), trim=st.integers(1, 6))
def test_every_charge_and_total_matches_the_pre_change_algorithm(
    ops: list[tuple[float, Op]], rate: Decimal, trim: int
) -> None:
    with patch.object(attribution, "TRIM_MIN", trim):  # trim the shared log often
        pair = Pair(rate)
        for wait, op in ops:
            pair.apply(wait, op)
        pair.settle_all(sorted(pair.old._inflight))
    pair.assert_same_totals()


def test_a_long_busy_run_matches_the_pre_change_algorithm() -> None:
    """Thousands of requests at 8, 32, 56 and 80 in flight in turn, so intervals pile up past
    the log's natural trim threshold, with every kind of event (seeded: the same run every
    time)."""
    rng = random.Random(14)
    pair = Pair(Decimal("0.0025"))
    live: list[str] = []
    for i in range(6000):
        pair.now += rng.choice([0.0, rng.expovariate(1000.0)])  # some at the same instant
        roll = rng.random()
        if len(live) < 8 + 24 * (i // 500 % 4):
            rid = f"q{i}"
            pair.both("begin", rid, opaque=rng.random() < 0.5, prompt_estimate=rng.randrange(400))
            live.append(rid)
        elif roll < 0.45:
            pair.both("add_tokens", rng.choice(live), rng.randrange(1, 30),
                      prompt_estimate=rng.randrange(400))  # fmt: skip
        elif roll < 0.85:
            rid = live.pop(rng.randrange(len(live)))
            count = rng.choice([None, rng.randrange(2000)])
            pair.both("finish", rid, work_tokens=count, prompt_tokens=count)
        elif roll < 0.9:
            pair.both("abandon", live.pop(rng.randrange(len(live))))
        else:
            pair.others, pair.watts = rng.randrange(3), rng.choice([None, 350.0, 412.5])
            pair.now += rng.random()
            pair.both("tick")
    assert pair.new._log._base > attribution.TRIM_MIN  # the shared log was trimmed
    pair.settle_all(live)
    pair.assert_same_totals()
