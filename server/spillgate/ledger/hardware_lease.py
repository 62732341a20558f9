"""The pools' hardware leases (migration 14): who books each pool's hardware time.

One row per pool (costing/pool.py says what a pool and its lease are). `book_in` reads the
row under a write lock (FOR UPDATE on PostgreSQL; SQLite's write transactions hold the
database's one write lock from their start), lets the caller plan the booking from it, and
writes the plan's rows and lease in the same transaction: two processes never both book a
period as the holder.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, MetaData, String, Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.costing.costclock import HardwarePeriod
from spillgate.costing.pool import Booking, Lease
from spillgate.ledger.schema import UTCDateTime, hardware_periods

metadata = MetaData()

hardware_lease = Table(
    "hardware_lease",
    metadata,
    Column("pool", String(128), primary_key=True),
    Column("holder", String(128), nullable=False),  # a node_id; "" before anyone booked
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("booked_from", UTCDateTime()),  # the span of time the pool has booked
    Column("booked_until", UTCDateTime()),
)

_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def create_lease_table(conn: Connection) -> None:
    """Migration 14: the table, created if missing (idempotent)."""
    metadata.create_all(conn, checkfirst=True)


async def book_in(conn: AsyncConnection, pool: str, node_id: str,
                  planner: Callable[[Lease], Booking]) -> Booking:
    """Plan from the pool's lease as it stands and write the plan (rows and lease)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # The row exists before it is locked. On PostgreSQL at READ COMMITTED (the default; the
    # ledger sets no other) a second process's insert waits for the first to commit, and its
    # SELECT ... FOR UPDATE then reads and locks the committed row.
    await conn.execute(dialect.insert(hardware_lease).values(
        pool=pool, holder="", expires_at=_NEVER, booked_from=None, booked_until=None,
    ).on_conflict_do_nothing(index_elements=["pool"]))
    h = hardware_lease.c
    row = (await conn.execute(
        select(h.holder, h.expires_at, h.booked_from, h.booked_until)
        .where(h.pool == pool).with_for_update()
    )).one()
    booking = planner(Lease(row.holder, row.expires_at, row.booked_from, row.booked_until))
    if booking.lease is not None:
        lease = booking.lease
        await conn.execute(update(hardware_lease).where(h.pool == pool).values(
            holder=lease.holder, expires_at=lease.expires_at, booked_from=lease.booked_from,
            booked_until=lease.booked_until))
    if not booking.rows:
        return booking
    await conn.execute(insert(hardware_periods), [period_columns(node_id, p)
                                                  for p in booking.rows])
    return booking


def period_columns(node_id: str, p: HardwarePeriod) -> dict[str, Any]:
    """A period as a `hardware_periods` row of process `node_id`."""
    return {"node_id": node_id, "started_at": p.started_at, "ended_at": p.ended_at,
            "busy_s": p.busy_s, "idle_s": p.idle_s, "busy_usd": p.busy_usd,
            "idle_usd": p.idle_usd, "power_watts": p.power_watts, "profile": p.profile,
            "measured_s": p.measured_s, "external_s": p.external_s,
            "unattributed_usd": p.unattributed_usd}
