"""Splitting a busy interval's cost among the requests in flight, and correcting it later.

All amounts here are integer quanta of the cost clock (1e-12 USD by default), so a split and
every later correction move whole quanta between requests and never create or lose any.

At the time of an interval some progress is unknown:
  - a plain (non-stream) request reports nothing until it settles: it takes an even share;
  - a stream's prompt is counted, when its first output arrives, as the bytes/4 estimate.
The interval's split is therefore kept (`Interval`, `Share`) as long as a participant may
still correct it: every interval of a plain request in flight, the interval of a stream's
prefill. When the truth arrives (`reweight`) the part of the interval held by the corrected
request and by the other participants whose tokens are known and who are still in flight is
split again by tokens. A settled request's cost was told to its client and written to its
row: it never changes, so a correction moves quanta only among requests still in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class InFlight:
    """One of this node's requests on the local engine."""

    order: int  # begin order: the earliest begun wins ties
    opaque: bool = False  # progress unknown until it settles (a plain request)
    tokens: float = 0.0  # processed during the current interval
    quanta: int = 0  # attributed so far
    done: bool = False  # settled or gone: its share is final
    output_seen: bool = False
    prompt_pending: int = 0  # prompt estimate counted in the current interval
    history: list[Share] = field(default_factory=list)  # opaque: its share of each interval
    prefill: Share | None = None  # a stream: its share of the interval its prompt counted in
    prefill_estimate: int = 0

    def close(self) -> None:
        """Settled: its share is final; drop the references that kept intervals alive."""
        self.done = True
        self.history = []
        self.prefill = None


@dataclass(slots=True, eq=False)
class Share:
    entry: InFlight
    tokens: float | None  # None: unknown (a plain request's, until it settles)
    quanta: int
    interval: Interval


@dataclass(slots=True, eq=False)
class Interval:
    dt: float
    shares: list[Share] = field(default_factory=list)


def split(entries: list[InFlight], external: int, units: int, dt: float) -> int:
    """Give each entry its quanta of a busy interval worth `units`; returns the quanta kept
    for other clients (an even share each). Opaque entries take an even share, streams the
    rest by tokens (evenly when none reported any); shares are rounded down and the
    remainder goes to the largest share (the earliest begun on ties)."""
    weights = _weights(entries, external, units)
    kept = units * external // (len(entries) + external)
    heir = max(range(len(entries)), key=lambda i: (weights[i], -entries[i].order))
    weights[heir] += units - kept - sum(weights)
    interval = Interval(dt)
    for entry, quanta in zip(entries, weights, strict=True):
        entry.quanta += quanta
        share = Share(entry, None if entry.opaque else entry.tokens, quanta, interval)
        interval.shares.append(share)
        if entry.opaque:
            entry.history.append(share)
        if entry.prompt_pending:
            entry.prefill, entry.prefill_estimate = share, entry.prompt_pending
            entry.prompt_pending = 0
        entry.tokens = 0.0
    return kept


def _weights(entries: list[InFlight], external: int, units: int) -> list[int]:
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
            shares.append(int(pool * entry.tokens / tokens))
        else:
            shares.append(pool // len(streams))
    return shares


def reweight(share: Share, tokens: float) -> None:
    """`share`'s tokens in its interval are now known: split again the quanta held by it
    and by the participants of that interval whose tokens are known and still in flight."""
    share.tokens = max(0.0, tokens)
    group = [s for s in share.interval.shares
             if s is share or (s.tokens is not None and not s.entry.done)]  # fmt: skip
    pool = sum(s.quanta for s in group)
    weight = sum(s.tokens or 0.0 for s in group)
    if weight > 0:
        new = [int(pool * (s.tokens or 0.0) / weight) for s in group]
    else:
        new = [pool // len(group)] * len(group)
    heir = max(range(len(group)), key=lambda i: (new[i], -group[i].entry.order))
    new[heir] += pool - sum(new)
    for s, quanta in zip(group, new, strict=True):
        s.entry.quanta += quanta - s.quanta
        s.quanta = quanta


def settle_opaque(entry: InFlight, work_tokens: int) -> None:
    """A plain request settled having processed `work_tokens` (prompt not served from a
    cache, plus output): spread them evenly over its time on the engine and correct each
    interval it took an even share of."""
    total_s = sum(s.interval.dt for s in entry.history)
    if total_s <= 0:
        return
    for share in entry.history:
        reweight(share, work_tokens * share.interval.dt / total_s)


def settle_prefill(entry: InFlight, prompt_tokens: int) -> None:
    """A stream's engine-counted prompt tokens replace the estimate counted at first output."""
    if entry.prompt_pending:  # still in the open interval: not split yet
        entry.tokens += prompt_tokens - entry.prompt_pending
        entry.prompt_pending = prompt_tokens
    elif entry.prefill is not None and entry.prefill.tokens is not None:
        reweight(entry.prefill, entry.prefill.tokens - entry.prefill_estimate + prompt_tokens)
