"""Hardware booked once per pool, however many gateway processes serve it.

Every gateway process runs its own cost clock (costclock.py), and each clock accrues the
whole node. So N processes in front of one set of engines (gateway replicas, or several
processes on one host) would book the node's hardware N times. A *pool* names that hardware
(`cost.pool`). The processes of one pool on one ledger share a lease, one `hardware_lease`
row (holder, expiry, the span booked), and at every drain each books its period by `plan`:

- The holder books its period whole: every second of the pool, busy or idle. It renews the
  lease each time, or takes it once the last holder has let it expire (LEASE_S). In its
  view the other processes' sequences are other clients of the engine (`external`), so
  their busy share is in its unattributed cost.
- Every other process books only the share its own requests carry (its period's busy cost
  less its unattributed cost), as *negative* unattributed cost: busy cost that the holder
  booked as other clients' is carried by this process's requests after all. Its row has
  no seconds and no busy or idle cost.

So the pool's seconds and cost are booked once, and over the pool
sum(attributed to requests) + unattributed + idle == booked cost still holds. How the busy
cost divides between processes is as good as the holder's view of the engine's other
sequences (its /metrics, sampled each second); where that view lags, the pool's
unattributed cost can dip below zero for a while. The total does not move.

The lease also keeps the span the pool has booked (booked_from .. booked_until), so no
second is booked twice:
- A period's seconds outside that span are booked whole (cut in proportion, the rest as
  the carried share): the holder's after the span, and any process's before it when the
  period reaches into it (at a pool's start, a process that began earlier may drain after
  a later one).
- A gap since the last booking is booked by the next holder as idle at the nominal rate,
  when it is at most MAX_GAP_S long and somebody served through it: the last holder
  stopped without releasing (a crash, a failed drain: the others were serving), or the new
  holder was already running. After a release with nobody running, or a longer gap, it
  was downtime, which is not booked, as a lone node's is not.
A holder that stops releases the lease, so another process's next drain takes over. Expiry
compares the wall clocks of different processes: the pool's hosts keep time (NTP).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from spillgate.costing.costclock import HardwarePeriod

Interval = tuple[datetime, datetime]
LEASE_S = 30.0  # three missed drains (accountant.PERIOD_S) before another process takes over
MAX_GAP_S = 120.0  # a longer hole in the bookings was downtime of the whole pool


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str  # node_id of the process that books the pool; "" before anyone has
    expires_at: datetime
    booked_from: datetime | None  # the span the pool has booked; None: nothing yet
    booked_until: datetime | None


@dataclass(frozen=True, slots=True)
class Booking:
    rows: tuple[HardwarePeriod, ...]  # hardware_periods rows to insert
    holder: bool  # this process holds the lease now
    lease: Lease | None  # the pool's lease after this booking; None: unchanged


def plan(period: HardwarePeriod, lease: Lease, me: str, *, nominal_rate: Decimal,
         quantum: Decimal, release: bool = False,
         alive_since: datetime | None = None) -> Booking:
    """How process `me` books its drained `period`, given the pool's `lease` as it stands.
    `nominal_rate`: USD per second at nominal watts (a gap's cost). `release`: `me` stops,
    so a lease it holds expires now. `alive_since`: when `me` started (a gap it lived
    through was served, whatever the last holder did)."""
    start, now = period.started_at, period.ended_at
    holder = lease.holder in ("", me) or lease.expires_at <= now
    pieces, gaps = _outside_span(start, now, lease, holder, alive_since)
    rows = [_idle(a, b, nominal_rate, quantum, period.profile) for a, b in gaps]
    rows += _book(period, pieces, quantum)
    first, last = lease.booked_from, lease.booked_until
    span_from = start if first is None else min([first, *(a for a, _ in pieces)])
    if not holder:
        moved = span_from != first
        return Booking(tuple(rows), False, replace(lease, booked_from=span_from) if moved else None)
    expires = now if release else now + timedelta(seconds=LEASE_S)
    span_until = now if last is None else max(last, now)
    return Booking(tuple(rows), True, Lease(me, expires, span_from, span_until))


def _outside_span(start: datetime, now: datetime, lease: Lease, holder: bool,
                  alive_since: datetime | None) -> tuple[list[Interval], list[Interval]]:
    """The parts of the period start..now that the pool has not booked (to book whole), and
    a gap to book as idle: time since the last booking that somebody served."""
    first, last = lease.booked_from, lease.booked_until
    if first is None or last is None:
        return ([(start, now)] if holder and now > start else []), []
    # Before the span only when the period reaches it: a period committed so late that it
    # ends before the span begins would leave a hole between the two.
    pieces = [(start, first)] if start < first <= now else []
    gaps = []
    if holder and now > last:
        pieces.append((max(start, last), now))
        # Served: the last holder stopped without releasing, or this process was running.
        served = lease.expires_at > last or (alive_since is not None and alive_since <= last)
        if last < start and served and _seconds(last, start) <= MAX_GAP_S:
            gaps.append((last, start))
    return [(a, b) for a, b in pieces if b > a], gaps


def carried(period: HardwarePeriod) -> HardwarePeriod:
    """The row of a process that does not hold the lease: only its requests' share."""
    carried_usd = period.busy_usd - period.unattributed_usd
    return HardwarePeriod(
        started_at=period.started_at, ended_at=period.ended_at, busy_s=0.0, idle_s=0.0,
        busy_usd=Decimal(0), idle_usd=Decimal(0), power_watts=None, profile=period.profile,
        unattributed_usd=-carried_usd,
    )


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def _idle(start: datetime, end: datetime, rate: Decimal, quantum: Decimal,
          profile: str) -> HardwarePeriod:
    gap_s = _seconds(start, end)
    return HardwarePeriod(
        started_at=start, ended_at=end, busy_s=0.0, idle_s=gap_s, busy_usd=Decimal(0),
        idle_usd=(rate * Decimal(repr(gap_s))).quantize(quantum, ROUND_HALF_EVEN),
        power_watts=None, profile=profile,
    )


def _book(period: HardwarePeriod, pieces: list[tuple[datetime, datetime]],
          quantum: Decimal) -> list[HardwarePeriod]:
    """Rows for `period`: each piece of it booked whole, in proportion to its time, and the
    rest (what the pool has booked already) as the carried share."""
    if pieces == [(period.started_at, period.ended_at)]:
        return [period]
    span_s = _seconds(period.started_at, period.ended_at)
    rows, rest = [], period
    for start, end in pieces:
        f = Decimal(repr(_seconds(start, end) / span_s)) if span_s > 0 else Decimal(0)
        row = _part(period, f, quantum, start, end)
        rest = replace(rest, busy_usd=rest.busy_usd - row.busy_usd,
                       unattributed_usd=rest.unattributed_usd - row.unattributed_usd)
        rows.append(row)
    share = carried(rest)  # a process with nothing to carry writes no row for it
    return [*rows, share] if share.unattributed_usd else rows


def _part(period: HardwarePeriod, f: Decimal, quantum: Decimal, start: datetime,
          end: datetime) -> HardwarePeriod:
    def usd(value: Decimal) -> Decimal:
        return (value * f).quantize(quantum, ROUND_HALF_EVEN)

    share = float(f)
    return replace(
        period, started_at=start, ended_at=end, busy_s=period.busy_s * share,
        idle_s=period.idle_s * share, busy_usd=usd(period.busy_usd),
        idle_usd=usd(period.idle_usd), measured_s=period.measured_s * share,
        external_s=period.external_s * share, unattributed_usd=usd(period.unattributed_usd),
    )
