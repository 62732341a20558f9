"""Splitting a busy interval's cost among the requests in flight, and correcting it later.

All amounts here are integer quanta of the cost clock (1e-12 USD by default), so a split and
every later correction move whole quanta between requests and never create or lose any.

A busy interval's cost goes first to other clients of the engine (an even share per running
sequence, kept unattributed); the rest is split among this node's requests by the tokens
each processed in the interval (evenly when none did). Some of those counts are estimates:
  - a stream's prompt is prefilled between its dispatch and its first output, and counts
    bytes/4 of the body until the engine's usage says how many tokens it was: at the first
    output the estimate is spread over the intervals since dispatch;
  - a plain request reports nothing until it answers: its prompt estimate counts in its
    first interval, then, in each interval, as many tokens as the mean stream decoded in it
    (a batched engine advances every running sequence one token per step).
When the engine's counts arrive they replace the estimates.

So the split is settled lazily: each interval keeps the quanta (`pool`) and the total weight
of the participants that still hold a part of it, and each request its weight in each of its
intervals. A request takes its part when it settles — pool x weight / total of the holders
left, the last holder the rest — so a correction (a weight changed) moves quanta only among
the requests still in flight: a settled request's cost was told to its client and written to
its row, and never changes.

Every request in flight holds every interval closed since it began, so the intervals live
once, in an `IntervalLog` (parallel lists, trimmed behind the oldest request in flight), and
a request keeps only where it starts and the weights that differ from its interval's default
(0.0 for a stream that reported nothing in it, the mean stream's tokens for a plain request):
closing an interval costs O(requests whose weight is not the default), not O(requests in
flight), and settling is one loop over its intervals. An interval's total weight is the sum
of its weights in begin order, as the float arithmetic of the corrections expects: summed
over every request in flight when plain ones weigh a mean that is not 0; otherwise the only
weights that are not 0.0 are whole token counts, whose float sum is exact in any order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

EPSILON = 1e-9  # a total weight below this is none (float residue of corrections)
TRIM_MIN = 256  # intervals kept before the log looks for a prefix no request holds


@dataclass(slots=True, eq=False)
class InFlight:
    """One of this node's requests on the local engine."""

    order: int  # begin order
    opaque: bool = False  # progress unknown until it settles (a plain request)
    start: int = 0  # the log index of its first interval
    tokens: float = 0.0  # weight in the current (open) interval
    decoded: int = 0  # a stream's output tokens in the current interval
    output_seen: bool = False
    prompt_pending: int = 0  # a prompt estimate counted in the open interval
    prompt_estimate: int = 0
    weights: dict[int, float] = field(default_factory=dict)  # by log index, not the default
    prefill: tuple[int, int] = (0, 0)  # the log indexes its prompt is spread over


class IntervalLog:
    """The busy intervals held by the requests in flight (`entries`: a live view of them in
    begin order), as parallel lists indexed by log index - `_base`."""

    def __init__(self, entries: Collection[InFlight]) -> None:
        self._entries = entries
        self._base = 0  # log index of the first interval kept
        self._dt: list[float] = []
        self._pool: list[int] = []  # quanta not yet taken by a participant that settled
        self._total: list[float] = []  # weight of the participants still holding a part
        self._holders: list[int] = []  # participants still holding a part
        self._mean: list[float] = []  # the mean stream's tokens: a plain request's weight
        self._dirty: dict[int, InFlight] = {}  # by order: a weight in the open interval
        self._decoded = 0  # output tokens of the streams in the open interval
        self._decoders = 0  # streams in flight that have output
        self._opaque = 0  # plain requests in flight
        self._trim_at = TRIM_MIN

    @property
    def end(self) -> int:
        """The log index the next interval closed will have."""
        return self._base + len(self._dt)

    def admit(self, entry: InFlight, prompt_estimate: int) -> None:
        """A request begins: it holds the intervals closed from now on; a plain one counts
        its prompt estimate in the first."""
        entry.start = self._base + len(self._dt)
        if entry.opaque:
            self._opaque += 1
            entry.tokens = float(prompt_estimate)
            self._dirty[entry.order] = entry

    def add(self, entry: InFlight, n: int) -> None:
        """`n` > 0 tokens processed by the entry in the open interval."""
        entry.tokens += n
        entry.decoded += n
        if not entry.opaque:
            self._decoded += n
        self._dirty[entry.order] = entry

    def close(self, external: int, units: int, dt: float) -> int:
        """Close a busy interval worth `units` among the entries (module docstring); returns
        the quanta kept for other clients (an even share each)."""
        entries = self._entries
        kept = units * external // (len(entries) + external)
        mean = self._decoded / self._decoders if self._decoders else 0.0
        index = self._base + len(self._dt)
        if mean and self._opaque:  # every plain request weighs the mean: all, in order
            total = sum([e.tokens + mean if e.opaque else e.tokens for e in entries])
            ordered = True
        else:  # the others weigh 0.0, these whole tokens: an exact sum, in any order
            total, ordered = 0.0, False
        for entry in self._dirty.values():
            weight = entry.tokens + mean if entry.opaque else entry.tokens
            entry.weights[index] = weight
            if not ordered:
                total += weight
            if entry.prompt_pending:
                entry.prefill, entry.prompt_pending = (index, index + 1), 0
            entry.tokens, entry.decoded = 0.0, 0
        self._dirty.clear()
        self._decoded = 0
        self._dt.append(dt)
        self._pool.append(units - kept)
        self._total.append(total)
        self._holders.append(len(entries))
        self._mean.append(mean)
        return kept

    def take(self, entry: InFlight, work_tokens: int | None = None) -> int:
        """The entry settles and leaves: its part of each of its intervals, by weight among
        the holders left (evenly when none has weight; the last holder takes the rest).
        `work_tokens`: what a plain request processed (prompt not served from a cache, plus
        output); it replaces its estimates first, spread evenly over its time."""
        lo, hi = entry.start - self._base, len(self._dt)
        quanta = self._take(entry, lo, hi, work_tokens) if hi > lo else 0
        self._leave(entry)
        return quanta

    def _take(self, entry: InFlight, lo: int, hi: int, work_tokens: int | None) -> int:
        # The hottest loop of the clock (O(intervals) per settle): plain operations, no calls.
        weights = self._mean[lo:hi] if entry.opaque else [0.0] * (hi - lo)
        for index, weight in entry.weights.items():
            weights[index - entry.start] = weight
        pools, totals, holders, dts = self._pool, self._total, self._holders, self._dt
        seconds = sum(dts[lo:hi]) if work_tokens is not None else 0.0
        tokens = float(work_tokens or 0)
        quanta = 0
        for k, weight in enumerate(weights, lo):
            pool, total = pools[k], totals[k]
            if seconds > 0:  # the weight the count gives this interval
                spread = tokens * dts[k] / seconds
                if spread < 0.0:
                    spread = 0.0
                total += spread - weight
                weight = spread
            held = holders[k]
            if held <= 1:
                part = pool
            elif total > EPSILON:
                part = int(pool * weight / total)
                if part > pool:
                    part = pool
            else:
                part = pool // held
            pools[k], totals[k], holders[k] = pool - part, total - weight, held - 1
            quanta += part
        return quanta

    def first_output(self, entry: InFlight, prompt_estimate: int) -> None:
        """A stream's first output: its prompt was prefilled over its intervals so far (or now,
        in the open interval, if it has none)."""
        entry.output_seen = True
        self._decoders += 1
        entry.prompt_estimate = prompt_estimate
        if self._seconds(entry.start, self.end) > 0:
            entry.prefill = (entry.start, self.end)
            self._spread(entry, entry.start, self.end, prompt_estimate)
        else:
            entry.tokens += prompt_estimate
            entry.prompt_pending = prompt_estimate
            self._dirty[entry.order] = entry

    def settle_prefill(self, entry: InFlight, prompt_tokens: int) -> None:
        """A stream's engine-counted prompt tokens replace the estimate counted at first
        output (called once it has left the clock, before `take`)."""
        delta = prompt_tokens - entry.prompt_estimate
        if entry.prompt_pending:  # still in the open interval
            entry.tokens = max(0.0, entry.tokens + delta)
            entry.prompt_pending = prompt_tokens
        else:
            self._spread(entry, *entry.prefill, delta)

    def _leave(self, entry: InFlight) -> None:
        self._dirty.pop(entry.order, None)
        if entry.opaque:
            self._opaque -= 1
        elif entry.output_seen:
            self._decoders -= 1
            self._decoded -= entry.decoded
        if len(self._dt) >= self._trim_at:  # amortised: the next look at twice the length
            end = self._base + len(self._dt)
            self._clear(min((e.start for e in self._entries), default=end) - self._base)
            self._trim_at = max(TRIM_MIN, 2 * len(self._dt))

    def _clear(self, count: int) -> None:
        """Forget the first `count` intervals (no request holds them)."""
        for column in (self._dt, self._pool, self._total, self._holders, self._mean):
            del column[:count]
        self._base += count

    def _seconds(self, lo: int, hi: int) -> float:
        return sum(self._dt[lo - self._base : hi - self._base])

    def _spread(self, entry: InFlight, lo: int, hi: int, tokens: float) -> None:
        """Add `tokens` to a stream's weights over log indexes lo..hi-1, by their duration."""
        seconds = self._seconds(lo, hi)
        if seconds <= 0:
            return
        base, dts, totals, weights = self._base, self._dt, self._total, entry.weights
        for index in range(lo, hi):
            old = weights.get(index, 0.0)  # a stream's default weight
            weight = max(0.0, old + tokens * dts[index - base] / seconds)
            totals[index - base] += weight - old
            weights[index] = weight
