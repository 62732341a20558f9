"""The cost clock's attribution before issue 14, kept as the oracle of the current one.

This is the pre-change algorithm of server/spillgate/costing/costclock.py and attribution.py
(main at 64fd31e), copied here unchanged but for what the oracle does not need (hardware
periods, profiles): every closed interval is appended to every request in flight, and a
request settles over its own list of intervals. tests/unit/test_costclock_oracle.py drives it
and the current clock with the same events and asserts identical results;
scripts/bench_costclock.py times both side by side. Do not optimise it: it is the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

EPSILON = 1e-9  # a total weight below this is none (float residue of corrections)


@dataclass(slots=True, eq=False)
class Interval:
    dt: float
    pool: int  # quanta not yet taken by a participant that settled
    total: float  # weight of the participants still holding a part
    holders: int  # participants still holding a part


@dataclass(slots=True, eq=False)
class InFlight:
    """One of this node's requests on the local engine."""

    order: int  # begin order
    opaque: bool = False  # progress unknown until it settles (a plain request)
    tokens: float = 0.0  # weight in the current (open) interval
    decoded: int = 0  # a stream's output tokens in the current interval
    output_seen: bool = False
    prompt_pending: int = 0  # a prompt estimate counted in the open interval
    prompt_estimate: int = 0
    intervals: list[Interval] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # its weight in each interval
    prefill: tuple[int, int] = (0, 0)  # the intervals its prompt is spread over


def split(entries: Collection[InFlight], external: int, units: int, dt: float) -> int:
    """Close a busy interval worth `units` among the entries (module docstring); returns
    the quanta kept for other clients (an even share each). Two passes over the entries:
    the mean stream's tokens, then each entry's weight (`sum` of the weights in entry
    order, as the corrections' arithmetic expects)."""
    kept = units * external // (len(entries) + external)
    decoded = decoders = 0
    for e in entries:
        if e.output_seen and not e.opaque:
            decoded += e.decoded
            decoders += 1
    per_sequence = decoded / decoders if decoders else 0.0
    interval = Interval(dt, units - kept, 0.0, len(entries))
    weights = []
    for entry in entries:
        weight = entry.tokens + per_sequence if entry.opaque else entry.tokens
        weights.append(weight)
        if entry.prompt_pending:
            index = len(entry.intervals)
            entry.prefill, entry.prompt_pending = (index, index + 1), 0
        entry.intervals.append(interval)
        entry.weights.append(weight)
        entry.tokens, entry.decoded = 0.0, 0
    interval.total = sum(weights)
    return kept


def take(entry: InFlight, work_tokens: int | None = None) -> int:
    """The entry settles: its part of each of its intervals, by weight among the holders
    left (evenly when none has weight; the last holder takes the rest). `work_tokens`: what
    a plain request processed (prompt not served from a cache, plus output); it replaces its
    estimates first, spread evenly over its time, in the same pass over its intervals."""
    seconds = _seconds(entry, 0, len(entry.intervals)) if work_tokens is not None else 0.0
    tokens = float(work_tokens or 0)
    quanta = 0
    # The hottest loop of the clock (O(intervals) per settle): plain comparisons, no calls.
    for interval, weight in zip(entry.intervals, entry.weights, strict=True):
        pool = interval.pool
        if seconds > 0:  # the weight the count gives this interval (same arithmetic)
            spread = tokens * interval.dt / seconds
            if spread < 0.0:
                spread = 0.0
            interval.total += spread - weight
            weight = spread
        if interval.holders <= 1:
            part = pool
        elif interval.total > EPSILON:
            part = int(pool * weight / interval.total)
            if part > pool:
                part = pool
        else:
            part = pool // interval.holders
        interval.pool = pool - part
        interval.total -= weight
        interval.holders -= 1
        quanta += part
    entry.intervals, entry.weights = [], []
    return quanta


def first_output(entry: InFlight, prompt_estimate: int) -> None:
    """A stream's first output: its prompt was prefilled over its intervals so far (or now,
    in the open interval, if it has none)."""
    entry.output_seen = True
    entry.prompt_estimate = prompt_estimate
    end = len(entry.intervals)
    if _seconds(entry, 0, end) > 0:
        entry.prefill = (0, end)
        _spread(entry, 0, end, prompt_estimate, replace=False)
    else:
        entry.tokens += prompt_estimate
        entry.prompt_pending = prompt_estimate


def settle_prefill(entry: InFlight, prompt_tokens: int) -> None:
    """A stream's engine-counted prompt tokens replace the estimate counted at first output."""
    delta = prompt_tokens - entry.prompt_estimate
    if entry.prompt_pending:  # still in the open interval
        entry.tokens = max(0.0, entry.tokens + delta)
        entry.prompt_pending = prompt_tokens
    else:
        _spread(entry, *entry.prefill, delta, replace=False)


def _seconds(entry: InFlight, lo: int, hi: int) -> float:
    return sum(entry.intervals[k].dt for k in range(lo, hi))


def _spread(entry: InFlight, lo: int, hi: int, tokens: float, *, replace: bool) -> None:
    """Add (or, `replace`, set) `tokens` over intervals lo..hi-1, by their duration."""
    seconds = _seconds(entry, lo, hi)
    if seconds <= 0:
        return
    for k in range(lo, hi):
        part = tokens * entry.intervals[k].dt / seconds
        weight = max(0.0, part if replace else entry.weights[k] + part)
        entry.intervals[k].total += weight - entry.weights[k]
        entry.weights[k] = weight


DEFAULT_QUANTUM = Decimal("1e-12")
RateFn = Callable[[float | None], Decimal]
PowerFn = Callable[[], float | None]
ExternalFn = Callable[[], int]  # sequences the engines run for clients other than this node


def _no_power() -> float | None:
    return None


def _no_external() -> int:
    return 0


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
    """The pre-change clock: continuous accrual, busy cost attributed per request."""

    def __init__(
        self,
        rate: RateFn,
        *,
        power: PowerFn = _no_power,
        external: ExternalFn = _no_external,
        clock: Callable[[], float] = time.monotonic,
        quantum: Decimal = DEFAULT_QUANTUM,
    ) -> None:
        self._rate = rate
        self.power = power  # replaceable once telemetry is running
        self.external = external
        self._clock = clock
        self._quantum = quantum
        self._last = clock()
        self._inflight: dict[str, InFlight] = {}
        self._begun = 0
        self.totals = _Totals()
        self._period = _Totals()

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
        if opaque:
            entry.tokens = float(prompt_estimate)
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
            first_output(entry, prompt_estimate)
        entry.tokens += n
        entry.decoded += n

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
            return take(entry, work_tokens) * self._quantum
        if not entry.opaque and prompt_tokens is not None and entry.output_seen:
            settle_prefill(entry, prompt_tokens)
        return take(entry) * self._quantum

    def abandon(self, request_id: str) -> None:
        """The request left the engine for a paid API: its share so far stays busy cost
        that no request carries (the paid row holds the API price only)."""
        accrued = self.finish(request_id)  # no correction: it never settles here
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
        unattributed = self._attribute(cost, external, dt) if busy else Decimal(0)
        for totals in (self.totals, self._period):
            _add(totals, busy=busy, dt=dt, cost=cost, watts=watts)
            totals.unattributed_usd += unattributed
            if busy and not self._inflight:
                totals.external_s += dt

    def _attribute(self, cost: Decimal, external: int, dt: float) -> Decimal:
        """Split a busy interval's cost (module docstring); returns what no request took."""
        units = int(cost / self._quantum)  # integer quanta: exact floor division
        entries = self._inflight.values()  # not copied: nothing changes it during the split
        if not entries:
            return cost
        return split(entries, external, units, dt) * self._quantum


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
