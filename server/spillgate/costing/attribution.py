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

So the split is settled lazily: an `Interval` keeps the quanta (`pool`) and the total weight
of the participants that still hold a part of it, and each request keeps its weight in each
of its intervals. A request takes its part when it settles — pool x weight / total of the
holders left, the last holder the rest — so a correction (a weight changed) moves quanta
only among the requests still in flight: a settled request's cost was told to its client
and written to its row, and never changes. Settling costs O(intervals of the request), a
correction O(intervals it touches), whatever the concurrency.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

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
