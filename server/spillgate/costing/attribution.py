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
The split of every interval an estimate touched is kept (`Interval`, `Share`) until the
truth arrives (`reweight`): then the interval is split again among the participants still
in flight, with the corrected weight. A settled request's cost was told to its client and
written to its row: it never changes, so a correction moves quanta only among requests still
in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class InFlight:
    """One of this node's requests on the local engine."""

    order: int  # begin order: the earliest begun wins ties
    opaque: bool = False  # progress unknown until it settles (a plain request)
    tokens: float = 0.0  # weight in the current interval
    decoded: int = 0  # a stream's output tokens in the current interval
    quanta: int = 0  # attributed so far
    done: bool = False  # settled or gone: its share is final
    output_seen: bool = False
    prompt_pending: int = 0  # a prompt estimate counted in the current interval
    history: list[Share] = field(default_factory=list)  # the shares a correction may revisit
    prefill: list[Share] = field(default_factory=list)  # a stream's prompt is spread here
    prompt_estimate: int = 0

    def close(self) -> None:
        """Settled: its share is final; drop the references that kept intervals alive."""
        self.done = True
        self.history = []
        self.prefill = []


@dataclass(slots=True, eq=False)
class Share:
    entry: InFlight
    tokens: float
    quanta: int
    interval: Interval


@dataclass(slots=True, eq=False)
class Interval:
    dt: float
    shares: list[Share] = field(default_factory=list)


def split(entries: list[InFlight], external: int, units: int, dt: float) -> int:
    """Give each entry its quanta of a busy interval worth `units` (module docstring);
    returns the quanta kept for other clients. Shares are rounded down and the remainder
    goes to the largest share (the earliest begun on ties)."""
    kept = units * external // (len(entries) + external)
    decoders = [e.decoded for e in entries if not e.opaque and e.output_seen]
    per_sequence = sum(decoders) / len(decoders) if decoders else 0.0
    weights = [e.tokens + per_sequence if e.opaque else e.tokens for e in entries]
    quanta = _divide(units - kept, weights, [e.order for e in entries])
    interval = Interval(dt)
    for entry, weight, q in zip(entries, weights, quanta, strict=True):
        entry.quanta += q
        share = Share(entry, weight, q, interval)
        interval.shares.append(share)
        if entry.opaque or not entry.output_seen:
            entry.history.append(share)
        if entry.prompt_pending:
            entry.prefill = [share]
            entry.prompt_pending = 0
        entry.tokens, entry.decoded = 0.0, 0
    return kept


def _divide(pool: int, weights: list[float], order: list[int]) -> list[int]:
    """`pool` by weight (evenly when all are 0), rounded down; the remainder to the largest
    (the earliest begun on ties)."""
    total = sum(weights)
    if total > 0:
        parts = [int(pool * w / total) for w in weights]
    else:
        parts = [pool // len(weights)] * len(weights)
    heir = max(range(len(parts)), key=lambda i: (parts[i], -order[i]))
    parts[heir] += pool - sum(parts)
    return parts


def reweight(share: Share, tokens: float) -> None:
    """`share`'s weight in its interval is now known better: split again the quanta held
    by it and by the participants of that interval still in flight."""
    share.tokens = max(0.0, tokens)
    group = [s for s in share.interval.shares if s is share or not s.entry.done]
    parts = _divide(sum(s.quanta for s in group), [s.tokens for s in group],
                    [s.entry.order for s in group])  # fmt: skip
    for s, quanta in zip(group, parts, strict=True):
        s.entry.quanta += quanta - s.quanta
        s.quanta = quanta


def spread(shares: list[Share], tokens: float, *, replace: bool) -> None:
    """Add (or, `replace`, set) `tokens` spread over the shares' intervals by duration."""
    total_s = sum(s.interval.dt for s in shares)
    if total_s <= 0:
        return
    for share in shares:
        part = tokens * share.interval.dt / total_s
        reweight(share, part if replace else share.tokens + part)


def first_output(entry: InFlight, prompt_estimate: int) -> None:
    """A stream's first output: its prompt was prefilled since its dispatch (the intervals
    of its history), or now if it has none."""
    entry.output_seen = True
    entry.prompt_estimate = prompt_estimate
    if sum(s.interval.dt for s in entry.history) > 0:
        entry.prefill, entry.history = entry.history, []
        spread(entry.prefill, prompt_estimate, replace=False)
    else:
        entry.history = []
        entry.tokens += prompt_estimate
        entry.prompt_pending = prompt_estimate


def settle_opaque(entry: InFlight, work_tokens: int) -> None:
    """A plain request settled having processed `work_tokens` (prompt not served from a
    cache, plus output): they replace its estimates, spread evenly over its time."""
    spread(entry.history, work_tokens, replace=True)


def settle_prefill(entry: InFlight, prompt_tokens: int) -> None:
    """A stream's engine-counted prompt tokens replace the estimate counted at first output."""
    delta = prompt_tokens - entry.prompt_estimate
    if entry.prompt_pending:  # still in the open interval: not split yet
        entry.tokens = max(0.0, entry.tokens + delta)
        entry.prompt_pending = prompt_tokens
    else:
        spread(entry.prefill, delta, replace=False)
