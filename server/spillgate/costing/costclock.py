"""The cost clock: accrues the node's hardware cost continuously and attributes it to requests.

Time is cut into intervals at every `tick` (once a second from a background task) and at
every `begin`/`finish`, so a request is never charged for time before it was dispatched to
the engine or after it settled. The cost of an interval is `rate(power) * dt`, rounded to
`quantum` (1e-12 USD by default); `power` is the measured board power when a fresh reading
exists, else None (the rate then uses nominal watts), and the seconds priced at a measured
power are counted (`measured_s`) so a report can say which it used.

An interval is *busy* when one of our local requests is in flight (queued in the engine or
decoding) or when the engine reports sequences running for other clients (`external`);
otherwise it is *idle* and stays unattributed. A busy interval's cost is split among the
participants:
  - each *opaque* participant (a plain request, whose progress is unknown until it settles,
    or one running sequence of another client) takes an even share, cost / participants;
  - the rest goes to the streamed requests by their share of the tokens they processed in
    the interval (prompt tokens when prefilled, then each generated token), evenly among them
    when none reported tokens.
Other clients' shares stay unattributed (`unattributed_usd`), as does the share of a request
that left the local engine for a paid API (`abandon`). Shares are rounded down to the quantum
and the remainder goes to the request with the largest share (the earliest begun on ties), so

    sum(attributed to requests) + unattributed_usd + idle_usd == total accrued    (exactly)

The clock is driven from one event loop and holds no lock.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from spillgate.costing.hardware import HardwareProfile, cost_rate_usd_per_s

DEFAULT_QUANTUM = Decimal("1e-12")
RateFn = Callable[[float | None], Decimal]
PowerFn = Callable[[], float | None]
ExternalFn = Callable[[], int]  # sequences the engines run for clients other than this node


def _no_power() -> float | None:
    return None


def _no_external() -> int:
    return 0


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
    measured_s: float = 0.0  # seconds priced at measured power (the rest: nominal watts)
    external_s: float = 0.0  # busy seconds when only other clients used the engine
    unattributed_usd: Decimal = Decimal(0)  # busy cost no request of this node carries


@dataclass(slots=True)
class _InFlight:
    order: int
    opaque: bool = False  # progress unknown until it settles: an even share of each interval
    tokens: int = 0  # processed during the current interval
    accrued: int = 0  # in quanta: integer arithmetic per interval, Decimal only at finish


@dataclass(slots=True)
class _Totals:
    busy_s: float = 0.0
    idle_s: float = 0.0
    busy_usd: Decimal = Decimal(0)
    idle_usd: Decimal = Decimal(0)
    power_ws: float = 0.0  # watt-seconds of intervals that had a reading
    power_s: float = 0.0
    external_s: float = 0.0
    unattributed_usd: Decimal = Decimal(0)


class CostClock:
    """Continuous hardware-cost accrual, split into busy (attributed) and idle."""

    def __init__(
        self,
        rate: RateFn,
        *,
        power: PowerFn = _no_power,
        external: ExternalFn = _no_external,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        profile: str = "",
        quantum: Decimal = DEFAULT_QUANTUM,
    ) -> None:
        self._rate = rate
        self.power = power  # replaceable once telemetry is running
        self.external = external
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
        units: int,
        *,
        power: PowerFn = _no_power,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> CostClock:
        """A clock whose rate is `cost_rate_usd_per_s(profile, units, power)`."""

        @functools.lru_cache(maxsize=256)  # nominal (None) or a few recent readings
        def rate(watts: float | None) -> Decimal:
            return cost_rate_usd_per_s(profile, units, watts)

        return cls(rate, power=power, clock=clock, wall=wall, profile=profile.name)

    # --- request events ------------------------------------------------------------------
    def begin(self, request_id: str, *, opaque: bool = False) -> None:
        """A request is dispatched to the engine: close the interval so far, count it in.
        `opaque`: its progress is unknown (a plain request), so it takes even shares."""
        if request_id in self._inflight:
            raise ValueError(f"request {request_id!r} already begun")
        self.tick()
        self._inflight[request_id] = _InFlight(order=self._begun, opaque=opaque)
        self._begun += 1

    def has(self, request_id: str) -> bool:
        return request_id in self._inflight

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
        return Decimal(0) if entry is None else entry.accrued * self._quantum

    def abandon(self, request_id: str) -> None:
        """The request left the engine for a paid API: its share so far stays busy cost
        that no request carries (the paid row holds the API price only)."""
        accrued = self.finish(request_id)
        for totals in (self.totals, self._period):
            totals.unattributed_usd += accrued

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
        watts = self.power()
        cost = (self._rate(watts) * Decimal(repr(dt))).quantize(self._quantum, ROUND_HALF_EVEN)
        external = max(0, self.external())
        busy = bool(self._inflight) or external > 0
        unattributed = self._attribute(cost, external) if busy else Decimal(0)
        for totals in (self.totals, self._period):
            _add(totals, busy=busy, dt=dt, cost=cost, watts=watts)
            totals.unattributed_usd += unattributed
            if busy and not self._inflight:
                totals.external_s += dt

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
            measured_s=p.power_s,
            external_s=p.external_s,
            unattributed_usd=p.unattributed_usd,
        )
        self._period = _Totals()
        self._period_started = ended
        return period

    def _attribute(self, cost: Decimal, external: int) -> Decimal:
        """Split a busy interval's cost (module docstring); returns what no request took."""
        units = int(cost / self._quantum)  # integer quanta: exact floor division
        entries = list(self._inflight.values())
        if not entries:
            return cost
        weights = _weights(entries, external, units)
        given = 0
        for entry, weight in zip(entries, weights, strict=True):
            entry.accrued += weight
            given += weight
        kept = units * external // (len(entries) + external)  # other clients' even shares
        # Largest share wins the remainder; max() keeps the earliest begun on ties.
        heir = max(range(len(entries)), key=lambda i: (weights[i], -entries[i].order))
        entries[heir].accrued += units - kept - given
        for entry in entries:
            entry.tokens = 0
        return kept * self._quantum


def _weights(entries: list[_InFlight], external: int, units: int) -> list[int]:
    """Quanta per entry, rounded down: an even share per opaque participant, the streams'
    pool by tokens (evenly when none reported any)."""
    participants = len(entries) + external
    even = units // participants
    streams = [e for e in entries if not e.opaque]
    pool = units * len(streams) // participants
    tokens = sum(e.tokens for e in streams)
    shares = []
    for entry in entries:
        if entry.opaque:
            shares.append(even)
        elif tokens:
            shares.append(pool * entry.tokens // tokens)
        else:
            shares.append(pool // len(streams))
    return shares

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
