"""The cost clock: accrues the node's hardware cost continuously and attributes it to requests.

Time is cut into intervals at every `tick` (once a second from a background task) and at
every `begin`/`finish`, so a request is never charged for time before it was dispatched to
the engine or after it settled. The cost of an interval is `rate(power) * dt`, rounded to
`quantum` (1e-12 USD by default); `power` is the measured board power when a fresh reading
exists, else None (the rate then uses nominal watts), and the seconds priced at a measured
power are counted (`measured_s`) so a report can say which it used.

An interval is *busy* when one of our local requests is in flight (queued in the engine or
decoding) or when the engine reports sequences running for other clients (`external`);
otherwise it is *idle* and stays unattributed. A busy interval's cost goes first to the
running sequences of other clients (an even share each), the rest to our requests by the
tokens each processed in it (costing/attribution.py): a stream's output as it arrives and its
prompt spread over the time before its first output; a plain request, whose progress is
unknown until it settles, its prompt estimate first and then the tokens of a mean stream.
Both estimates are corrected when the engine's counts arrive, among the requests still in
flight.
Other clients' shares stay unattributed (`unattributed_usd`), as does the share of a request
that left the local engine for a paid API (`abandon`). A request takes its part of each
interval when it settles, rounded down to the quantum, and the last one to settle takes the
rest, so

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

from spillgate.costing.attribution import InFlight, IntervalLog
from spillgate.costing.hardware import HardwareProfile, cost_rate_usd_per_s

DEFAULT_QUANTUM = Decimal("1e-12")
_ZERO = Decimal(0)
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
        self.started_at = datetime.fromtimestamp(self._period_started, UTC)  # its first period
        self._inflight: dict[str, InFlight] = {}
        self._log = IntervalLog(self._inflight.values())  # a live view, in begin order
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
    def begin(self, request_id: str, *, opaque: bool = False, prompt_estimate: int = 0) -> None:
        """A request is dispatched to the engine: close the interval so far, count it in.
        `opaque`: its progress is unknown (a plain request): its `prompt_estimate` counts
        now, then the tokens of a mean stream (costing/attribution.py)."""
        if request_id in self._inflight:
            raise ValueError(f"request {request_id!r} already begun")
        if prompt_estimate < 0:
            raise ValueError("token count must be >= 0")
        self.tick()
        entry = InFlight(order=self._begun, opaque=opaque)
        self._log.admit(entry, prompt_estimate)
        self._inflight[request_id] = entry
        self._begun += 1

    def has(self, request_id: str) -> bool:
        return request_id in self._inflight

    def add_tokens(self, request_id: str, n: int, *, prompt_estimate: int = 0) -> None:
        """Output tokens of a stream; ignored once it has finished (late usage report).
        With its first output its prompt was prefilled: `prompt_estimate` tokens spread
        over its time since dispatch, until `finish` brings the engine's own count."""
        if n < 0 or prompt_estimate < 0:
            raise ValueError("token count must be >= 0")
        entry = self._inflight.get(request_id)
        if entry is None:
            return
        if n and not entry.output_seen and not entry.opaque:
            self.tick()  # the prefill ends here
            self._log.first_output(entry, prompt_estimate)
        if n:
            self._log.add(entry, n)

    def finish(self, request_id: str, *, work_tokens: int | None = None,
               prompt_tokens: int | None = None) -> Decimal:
        """Close the interval so far and return the request's attributed busy cost.

        What the engine reported corrects the shares taken while it was unknown (module
        docstring): `work_tokens` (prompt not from cache plus output) of a plain request,
        `prompt_tokens` (not from cache) of a stream."""
        self.tick()
        entry = self._inflight.pop(request_id, None)
        if entry is None:
            return Decimal(0)
        if entry.opaque and work_tokens is not None:  # its count replaces the estimates
            return self._log.take(entry, work_tokens) * self._quantum
        if not entry.opaque and prompt_tokens is not None and entry.output_seen:
            self._log.settle_prefill(entry, prompt_tokens)
        return self._log.take(entry) * self._quantum

    def abandon(self, request_id: str) -> None:
        """The request left the engine for a paid API: its share so far stays busy cost
        that no request carries (the paid row holds the API price only)."""
        accrued = self.finish(request_id)  # no correction: it never settles here
        for totals in (self.totals, self._period):
            totals.unattributed_usd += accrued

    def in_flight(self) -> int:
        return len(self._inflight)

    def nominal_rate(self) -> Decimal:
        """USD per second at the profile's nominal watts."""
        return self._rate(None)

    @property
    def quantum(self) -> Decimal:
        return self._quantum

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
        alone = not self._inflight and external > 0  # only other clients use the engine
        busy = alone or bool(self._inflight)
        if self._inflight:  # split among them (module docstring), in integer quanta
            units = int(cost / self._quantum)  # exact floor division
            unattributed = self._log.close(external, units, dt) * self._quantum
        else:
            unattributed = cost if alone else _ZERO
        for totals in (self.totals, self._period):
            _add(totals, busy, dt, cost, watts)
            totals.unattributed_usd += unattributed
            if alone:
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


def _add(t: _Totals, busy: bool, dt: float, cost: Decimal, watts: float | None) -> None:
    if busy:
        t.busy_s += dt
        t.busy_usd += cost
    else:
        t.idle_s += dt
        t.idle_usd += cost
    if watts is not None:
        t.power_ws += watts * dt
        t.power_s += dt
