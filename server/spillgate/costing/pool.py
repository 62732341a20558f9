"""Hardware booked once per pool, however many gateway processes serve it.

Every gateway process runs its own cost clock (costclock.py), and each clock accrues the
whole node. So N processes in front of one set of engines (gateway replicas, or several
processes on one host) would book the node's hardware N times. A *pool* names that hardware
(`cost.pool`). The processes of one pool on one ledger share a lease, one `hardware_lease`
row (holder, expires_at, booked_until), and at every drain each books its period by `plan`:

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

A takeover keeps the booked time continuous:
- A gap since the last booking (a holder that stopped without releasing) is booked as idle
  at the nominal rate, when it is at most MAX_GAP_S long. A longer gap means the whole pool
  was down, and downtime is not booked (as a lone node's is not).
- A period that overlaps the last booking is cut in proportion to the time outside it; the
  part inside is booked as the carried share only.
A holder that stops releases the lease, so another process's next drain takes over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from spillgate.costing.costclock import HardwarePeriod

LEASE_S = 30.0  # three missed drains (accountant.PERIOD_S) before another process takes over
MAX_GAP_S = 120.0  # a longer hole in the bookings was downtime of the whole pool


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str  # node_id of the process that books the pool; "" before anyone has
    expires_at: datetime
    booked_until: datetime | None  # end of the pool's last booked period; None: never


@dataclass(frozen=True, slots=True)
class Booking:
    rows: tuple[HardwarePeriod, ...]  # hardware_periods rows to insert
    lease: Lease | None  # the pool's lease after this booking; None: another process holds it

    @property
    def holder(self) -> bool:
        return self.lease is not None


def plan(period: HardwarePeriod, lease: Lease, me: str, *, nominal_rate: Decimal,
         quantum: Decimal, release: bool = False) -> Booking:
    """How process `me` books its drained `period`, given the pool's `lease` as it stands.
    `nominal_rate`: USD per second at nominal watts (a gap's cost). `release`: `me` stops,
    so a lease it holds expires now."""
    now = period.ended_at
    if lease.holder not in ("", me) and lease.expires_at > now:
        return Booking((carried(period),), None)
    last = lease.booked_until
    rows = _whole(period, last, nominal_rate, quantum)
    until = now if last is None else max(last, now)
    expires = now if release else now + timedelta(seconds=LEASE_S)
    return Booking(rows, Lease(me, expires, until))


def carried(period: HardwarePeriod) -> HardwarePeriod:
    """The row of a process that does not hold the lease: only its requests' share."""
    carried_usd = period.busy_usd - period.unattributed_usd
    return HardwarePeriod(
        started_at=period.started_at, ended_at=period.ended_at, busy_s=0.0, idle_s=0.0,
        busy_usd=Decimal(0), idle_usd=Decimal(0), power_watts=None, profile=period.profile,
        unattributed_usd=-carried_usd,
    )


def _whole(period: HardwarePeriod, last: datetime | None, rate: Decimal,
           quantum: Decimal) -> tuple[HardwarePeriod, ...]:
    if last is None or last == period.started_at:
        return (period,)
    if last < period.started_at:
        gap_s = (period.started_at - last).total_seconds()
        if gap_s > MAX_GAP_S:
            return (period,)
        idle_usd = (rate * Decimal(repr(gap_s))).quantize(quantum, ROUND_HALF_EVEN)
        gap = HardwarePeriod(
            started_at=last, ended_at=period.started_at, busy_s=0.0, idle_s=gap_s,
            busy_usd=Decimal(0), idle_usd=idle_usd, power_watts=None, profile=period.profile,
        )
        return gap, period
    return (_cut(period, last, quantum),)


def _cut(period: HardwarePeriod, last: datetime, quantum: Decimal) -> HardwarePeriod:
    """The part of `period` after `last` booked whole; the part before it (booked by the
    previous holder) as this process's carried share."""
    span_s = (period.ended_at - period.started_at).total_seconds()
    kept_s = max(0.0, (period.ended_at - last).total_seconds())
    f = Decimal(repr(kept_s / span_s)) if span_s > 0 else Decimal(0)

    def part(usd: Decimal) -> Decimal:
        return (usd * f).quantize(quantum, ROUND_HALF_EVEN)

    busy, idle, unattributed = (part(period.busy_usd), part(period.idle_usd),
                                part(period.unattributed_usd))
    rest = carried(replace(period, busy_usd=period.busy_usd - busy,
                           unattributed_usd=period.unattributed_usd - unattributed))
    share = float(f)
    return replace(
        period, started_at=min(last, period.ended_at),
        busy_s=period.busy_s * share, idle_s=period.idle_s * share, busy_usd=busy,
        idle_usd=idle, measured_s=period.measured_s * share,
        external_s=period.external_s * share,
        unattributed_usd=unattributed + rest.unattributed_usd,
    )
