"""The cost clock: accrues the node's hardware cost continuously and attributes it to requests.

Time is cut into intervals at every `tick` (once a second from a background task) and at
every `begin`/`finish`, so a request is never charged for time before it started or after it
ended. The cost of an interval is `rate(power) * dt`, rounded to `quantum` (1e-12 USD by
default). If requests are in flight the interval is *busy* and its cost is split among them
by their share of the tokens they processed during the interval (prompt tokens when they
start, then each generated token), evenly if none reported tokens; otherwise it is *idle*
and stays unattributed. Shares are rounded down to the quantum and the remainder goes to the
request with the largest share (the earliest begun on ties), so

    sum(attributed to requests) + idle_usd == total accrued    (exactly)

The clock is driven from one event loop and holds no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from spillgate.accounting.hardware import HardwareProfile, cost_rate_usd_per_s

DEFAULT_QUANTUM = Decimal("1e-12")
RateFn = Callable[[float | None], Decimal]
PowerFn = Callable[[], float | None]


def _no_power() -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class HardwarePeriod:
    """Hardware cost of the node between two drains: one `hardware_periods` row."""

    started_at: datetime
    ended_at: datetime
    busy_s: float
    idle_s: float
    busy_usd: Decimal
    idle_usd: Decimal
    power_watts: float | None  # time-weighted mean of the readings used; None if none
    profile: str


@dataclass(slots=True)
class _InFlight:
    order: int
    tokens: int = 0  # processed during the current interval
    accrued: Decimal = Decimal(0)


@dataclass(slots=True)
class _Totals:
    busy_s: float = 0.0
    idle_s: float = 0.0
    busy_usd: Decimal = Decimal(0)
    idle_usd: Decimal = Decimal(0)
    power_ws: float = 0.0  # watt-seconds of intervals that had a reading
    power_s: float = 0.0


class CostClock:
    """Continuous hardware-cost accrual, split into busy (attributed) and idle."""

    def __init__(
        self,
        rate: RateFn,
        *,
        power: PowerFn = _no_power,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        profile: str = "",
        quantum: Decimal = DEFAULT_QUANTUM,
    ) -> None:
        self._rate = rate
        self._power = power
        self._clock = clock
        self._wall = wall
        self._profile = profile
        self._quantum = quantum
        self._last = clock()
        self._period_started = wall()
        self._inflight: dict[str, _InFlight] = {}
        self._begun = 0
        self.totals = _Totals()
        self._period = _Totals()

    @classmethod
    def for_profile(
        cls,
        profile: HardwareProfile,
        gpus: int,
        *,
        power: PowerFn = _no_power,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> CostClock:
        """A clock whose rate is `cost_rate_usd_per_s(profile, gpus, power)`."""

        def rate(watts: float | None) -> Decimal:
            return cost_rate_usd_per_s(profile, gpus, watts)

        return cls(rate, power=power, clock=clock, wall=wall, profile=profile.name)

    # --- request events ------------------------------------------------------------------
    def begin(self, request_id: str) -> None:
        """A request starts using the node: close the interval so far, then count it in."""
        if request_id in self._inflight:
            raise ValueError(f"request {request_id!r} already begun")
        self.tick()
        self._inflight[request_id] = _InFlight(order=self._begun)
        self._begun += 1

    def add_tokens(self, request_id: str, n: int) -> None:
        """Tokens processed by a request; ignored once it has finished (late usage report)."""
        if n < 0:
            raise ValueError("token count must be >= 0")
        entry = self._inflight.get(request_id)
        if entry is not None:
            entry.tokens += n

    def finish(self, request_id: str) -> Decimal:
        """Close the interval so far and return the request's attributed busy cost."""
        self.tick()
        entry = self._inflight.pop(request_id, None)
        return Decimal(0) if entry is None else entry.accrued

    def in_flight(self) -> int:
        return len(self._inflight)

    # --- time ----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Accrue the cost of the time since the last event (called every second)."""
        now = self._clock() if now is None else now
        dt = now - self._last
        if dt <= 0:
            return
        self._last = now
        watts = self._power()
        cost = (self._rate(watts) * Decimal(repr(dt))).quantize(self._quantum, ROUND_HALF_EVEN)
        busy = bool(self._inflight)
        if busy:
            self._attribute(cost)
        for totals in (self.totals, self._period):
            _add(totals, busy=busy, dt=dt, cost=cost, watts=watts)

    def drain_period(self) -> HardwarePeriod:
        """Totals since the last drain (bringing the clock up to now), then start a new period."""
        self.tick()
        ended = self._wall()
        p = self._period
        period = HardwarePeriod(
            started_at=datetime.fromtimestamp(self._period_started, UTC),
            ended_at=datetime.fromtimestamp(ended, UTC),
            busy_s=p.busy_s,
            idle_s=p.idle_s,
            busy_usd=p.busy_usd,
            idle_usd=p.idle_usd,
            power_watts=p.power_ws / p.power_s if p.power_s > 0 else None,
            profile=self._profile,
        )
        self._period = _Totals()
        self._period_started = ended
        return period

    def _attribute(self, cost: Decimal) -> None:
        entries = list(self._inflight.values())
        weights = [e.tokens for e in entries]
        if sum(weights) == 0:
            weights = [1] * len(entries)
        total_weight = sum(weights)
        # Integer arithmetic in quanta: exact floor division, no context rounding.
        units = int(cost / self._quantum)
        given = 0
        for entry, weight in zip(entries, weights, strict=True):
            share = units * weight // total_weight
            entry.accrued += share * self._quantum
            given += share
        # Largest weight wins the remainder; max() keeps the earliest begun on ties.
        heir = max(range(len(entries)), key=lambda i: (weights[i], -entries[i].order))
        entries[heir].accrued += (units - given) * self._quantum
        for entry in entries:
            entry.tokens = 0


def _add(t: _Totals, *, busy: bool, dt: float, cost: Decimal, watts: float | None) -> None:
    if busy:
        t.busy_s += dt
        t.busy_usd += cost
    else:
        t.idle_s += dt
        t.idle_usd += cost
    if watts is not None:
        t.power_ws += watts * dt
        t.power_s += dt
