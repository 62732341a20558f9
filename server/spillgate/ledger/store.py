"""The cost ledger: one row per request, hardware cost periods, paid-budget counters.

Request path, and what it costs there:
  begin(start)   enqueue an 'open' row                        no await, microseconds
  finish(out)    enqueue the settled row (an upsert)          no await, microseconds
  reserve(...)   paid calls only: atomic budget reservation    one transaction (budgets.py)
  settle(...)    paid calls only: reserved -> spent            one transaction

A request's open and final rows carry the same started_at (both come from one record; the
final upsert keeps the stored one): the hourly report rollup (rollup.py), which the batcher
updates in the same transaction, counts a final row in its start hour.

A write-behind batcher (writer.py: a plain thread with its own connection on a SQLite file,
an asyncio task on PostgreSQL) group-commits queued rows every BATCH_INTERVAL_S or BATCH_MAX
items in one transaction, so an open row is durable within ~20-50 ms of `begin`. A failed
write keeps the rows queued and retries; `flush()` (tests, shutdown) writes everything queued
before it returns. On SQLite the async writes of this process (budgets, keys) pass one
asyncio lock (the database has one writer anyway; waiting in-process is cheaper than
SQLite's busy-sleep); the row writer thread and other processes are waited for through
busy_timeout.

Crash recovery (`recover`, at start-up): rows left 'open' by this node (`node_id`, default
the host name, stable across restarts of a container) or older than the grace period (any
node: in a cluster, a replica that died and never came back) become 'recovered':
finished_at = now, usage_source = 'estimated', status kept (null), tokens kept (0). Each of
their outstanding reservations is charged in full - reserved -> spent at the reserved
amount, the conservative upper bound, since the provider may have billed the call - and
that amount becomes the row's cost_usd. A reservation whose request row never reached the
database gets a 'recovered' row of its own, so no paid call is lost. A request that
finishes after being recovered (a live stream longer than the grace period on another
replica) still overwrites its row with the real figures; its settle then finds no
reservation and leaves the counters as charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cachetools import TTLCache
from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from spillgate.costing.costclock import HardwarePeriod
from spillgate.costing.pool import Booking, Lease
from spillgate.ledger import rollup
from spillgate.ledger.budgets import (
    BudgetSnapshot,
    Reservation,
    ReserveResult,
    day_period,
    extend_in,
    key_limits,
    month_period,
    reserve_in,
    settle_in,
    snapshot_in,
)
from spillgate.ledger.hardware_lease import book_in, period_columns
from spillgate.ledger.migrations import READONLY, migrate, open_engine
from spillgate.ledger.record import RequestRecord
from spillgate.ledger.rows import RecordRow
from spillgate.ledger.schema import (
    Money,
    RequestOutcome,
    RequestStart,
    budget_reservations,
    hardware_periods,
    requests,
)
from spillgate.ledger.writer import LoopWriter, RowOp, RowWriter, ThreadedWriter, sync_sqlite_engine

__all__ = ["BudgetSnapshot", "Ledger", "RequestOutcome", "RequestStart", "ReserveResult"]

log = logging.getLogger(__name__)
DEFAULT_GRACE_S = 600.0
KEY_CACHE_TTL_S = 5.0
SNAPSHOT_TTL_S = 1.0
CACHE_MAX = 10_000  # entries per cache: bounded memory whatever the number of keys


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """The ledger over one AsyncEngine. Build it with `await Ledger.open(dsn)`."""

    def __init__(self, engine: AsyncEngine, *, node_id: str, clock: Callable[[], datetime],
                 grace_s: float) -> None:
        self.engine = engine
        self.node_id = node_id
        self._clock = clock
        self._grace = timedelta(seconds=grace_s)
        self._snapshots: TTLCache[str, BudgetSnapshot] = TTLCache(CACHE_MAX, SNAPSHOT_TTL_S)
        self._limits: TTLCache[str, tuple[bool, bool]] = TTLCache(CACHE_MAX, KEY_CACHE_TTL_S)
        self._counters: TTLCache[tuple[str, str, str], bool] = TTLCache(CACHE_MAX, 86_400.0)
        sqlite_db = engine.dialect.name == "sqlite"
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if sqlite_db else None
        self._rows: RowWriter = LoopWriter(engine, self._write_lock)  # open() starts one

    @classmethod
    async def open(cls, dsn: str, *, node_id: str | None = None,
                   clock: Callable[[], datetime] = utc_now,
                   recover_grace_s: float = DEFAULT_GRACE_S) -> Ledger:
        """Connect, migrate, start the batcher. SQLite files get their folder and WAL."""
        engine = open_engine(dsn)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        ledger = cls(engine, node_id=node_id or socket.gethostname(), clock=clock,
                     grace_s=recover_grace_s)
        ledger._rows = ledger._start_writer(dsn)
        return ledger

    def _start_writer(self, dsn: str) -> RowWriter:
        sync_engine = sync_sqlite_engine(dsn)
        if sync_engine is not None:
            return ThreadedWriter(sync_engine)
        writer = LoopWriter(self.engine, self._write_lock)
        writer.start()
        return writer

    async def aclose(self) -> None:
        """Write everything queued, stop the batcher, close the connections."""
        try:
            await self._rows.aclose()
        finally:
            await self.engine.dispose()

    def now(self) -> datetime:
        """The ledger's clock (injected for tests)."""
        return self._clock()

    # --- transactions (also used by keys.py) ------------------------------------------------
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed on exit (serialized in-process on SQLite)."""
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection (a plain, non-locking transaction on SQLite)."""
        async with self.engine.connect() as conn:
            yield await conn.execution_options(**{READONLY: True})

    # --- request rows: the hot path ------------------------------------------------------
    def begin(self, start: RequestStart) -> None:
        """Queue the request's 'open' row; committed by the batcher within ~20-50 ms."""
        row = start.columns()
        row["node_id"] = self.node_id
        self._rows.put(RowOp(start.request_id, row, final=False))

    def finish(self, outcome: RequestOutcome) -> None:
        """Queue the request's final row (written as an upsert: it need not have begun)."""
        row = outcome.columns()
        row["node_id"] = self.node_id
        self._rows.put(RowOp(outcome.start.request_id, row, final=True))

    def begin_record(self, record: RequestRecord) -> None:
        """`begin` for a request record: queues a snapshot of its values; the row's dict is
        built by the batcher (ledger/rows.py), off the event loop on SQLite."""
        row = RecordRow.of(record, final=False, at=0.0, node_id=self.node_id)
        self._rows.put(RowOp(record.request_id, row, final=False))

    def finish_record(self, record: RequestRecord) -> None:
        """`finish` for a request record, finished now (see `begin_record`)."""
        row = RecordRow.of(record, final=True, at=time.time(), node_id=self.node_id)
        self._rows.put(RowOp(record.request_id, row, final=True))

    @property
    def pending(self) -> int:
        """Rows queued and not yet committed."""
        return self._rows.pending

    async def flush(self) -> None:
        """Commit every row queued before this call (raises if the database refuses)."""
        await self._rows.flush()

    # --- budgets ---------------------------------------------------------------------------
    async def reserve(self, key_id: str, request_id: str, amount: Decimal,
                      now: datetime | None = None) -> ReserveResult:
        """Atomically reserve `amount` on the key's day and month counters (both or none).

        Keys without budgets reserve nothing: ok, remaining None."""
        limited = self._limits.get(key_id)
        if limited is None:
            async with self.reading() as conn:
                limited = await key_limits(conn, key_id)
            self._limits[key_id] = limited
        if not any(limited):
            return ReserveResult(True, None, None)
        moment = now or self._clock()
        periods = (key_id, day_period(moment), month_period(moment))
        known = periods in self._counters
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self.engine.connect() as conn:
            tx = await conn.begin()
            result = await reserve_in(conn, Reservation(
                key_id, request_id, amount, moment, self.node_id, limited), ensure=not known)
            await (tx.commit() if result.ok else tx.rollback())
        if result.ok:
            self._counters[periods] = True  # committed: they exist from now on
        self._snapshots[key_id] = BudgetSnapshot(result.remaining_day, result.remaining_month)
        return result

    async def extend(self, key_id: str, request_id: str, extra: Decimal) -> ReserveResult:
        """Atomically grow the request's reservation by `extra` (a fallback to a dearer
        model), on every period it holds, or change nothing and answer ok=False."""
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self.engine.connect() as conn:
            tx = await conn.begin()
            ok, day, month = await extend_in(conn, request_id, extra)
            await (tx.commit() if ok else tx.rollback())
        result = ReserveResult(ok, day, month)
        self._snapshots[key_id] = BudgetSnapshot(day, month)
        return result

    async def settle(self, key_id: str, request_id: str, reserved: Decimal,
                     actual: Decimal) -> bool:
        """Reserved -> spent at `actual`. False if nothing was outstanding (already settled or
        recovered). `reserved` is informational: the stored reservation is what is released."""
        async with self.transaction() as conn:
            settled = await settle_in(conn, request_id, actual)
        self._snapshots.pop(key_id, None)
        if settled and reserved and actual > reserved:
            log.error("request %s cost %s over its reservation %s: the provider billed "
                      "beyond the reservation's bound", request_id, actual, reserved)
        return settled

    async def budget_snapshot(self, key_id: str, now: datetime | None = None) -> BudgetSnapshot:
        """Remaining day/month budget (None = unlimited); cached for SNAPSHOT_TTL_S."""
        hit = self._snapshots.get(key_id)
        if hit is not None:
            return hit
        async with self.reading() as conn:
            snap = await snapshot_in(conn, key_id, now or self._clock())
        self._snapshots[key_id] = snap
        return snap

    # --- recovery --------------------------------------------------------------------------
    async def recover(self, now: datetime | None = None) -> int:
        """Close rows and reservations a crashed process left open (rule: module docstring).

        Returns the number of request rows marked 'recovered'."""
        await self.flush()
        moment = now or self._clock()
        cutoff = moment - self._grace
        r, res = requests.c, budget_reservations.c
        async with self.transaction() as conn:
            held = (await conn.execute(
                select(res.request_id, res.key_id, res.amount_usd, res.created_at)
                .where(or_(res.node_id == self.node_id, res.created_at < cutoff))
            )).all()
            charged = {}
            for rid, key_id, amount, created in held:
                if await settle_in(conn, rid, amount):
                    charged[rid] = (key_id, amount, created)
            stale = and_(r.state == "open", or_(r.node_id == self.node_id, r.started_at < cutoff))
            closed = set((await conn.execute(
                update(requests).where(stale)
                .values(state="recovered", finished_at=moment, usage_source="estimated")
                .returning(r.request_id)
            )).scalars())
            orphans = await self._insert_orphans(conn, charged, moment)
            await self._charge_rows(conn, {rid: v[1] for rid, v in charged.items()
                                           if rid in closed})
            # Open rows and missing ones had no part in the rollup: add them as now closed.
            now_final = await rollup.stored_final_rows(conn, [*closed, *orphans])
            await rollup.apply_in(conn, rollup.fold(now_final.values()))
        self._snapshots.clear()
        return len(closed) + len(orphans)

    async def _insert_orphans(self, conn: AsyncConnection,
                              charged: Mapping[str, tuple[str, Decimal, datetime]],
                              moment: datetime) -> list[str]:
        """A 'recovered' row for each charged reservation whose request row is missing;
        returns their ids."""
        if not charged:
            return []
        present = set((await conn.execute(
            select(requests.c.request_id).where(requests.c.request_id.in_(list(charged)))
        )).scalars())
        rows = [
            {"request_id": rid, "node_id": self.node_id, "started_at": created,
             "finished_at": moment, "key_id": key_id, "tier": "api", "cost_kind": "api",
             "cost_usd": amount, "reserved_usd": amount, "usage_source": "estimated",
             "state": "recovered", "tags": {}}
            for rid, (key_id, amount, created) in charged.items() if rid not in present
        ]
        if rows:
            await conn.execute(insert(requests), rows)
        return [str(r["request_id"]) for r in rows]

    async def _charge_rows(self, conn: AsyncConnection, costs: Mapping[str, Decimal]) -> None:
        if not costs:
            return
        stmt = (
            update(requests).where(requests.c.request_id == bindparam("b_rid"))
            .values(cost_usd=bindparam("b_cost", type_=Money()),
                    reserved_usd=bindparam("b_cost", type_=Money()), cost_kind="api")
        )
        await conn.execute(stmt, [{"b_rid": rid, "b_cost": c} for rid, c in costs.items()])

    # --- reports and the cost clock ------------------------------------------------------
    async def rows_between(self, since: datetime, until: datetime, *,
                           include_open: bool = False) -> list[dict[str, Any]]:
        """Request rows with since <= started_at < until, oldest first, as column dicts.

        Open rows (no final cost yet) are left out unless `include_open`."""
        r = requests.c
        query = select(requests).where(r.started_at >= since, r.started_at < until)
        if not include_open:
            query = query.where(r.state != "open")
        async with self.reading() as conn:
            result = await conn.execute(query.order_by(r.started_at))
            return [dict(row._mapping) for row in result]

    async def hardware_between(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Hardware periods with since <= started_at < until, oldest first."""
        h = hardware_periods.c
        query = select(hardware_periods).where(h.started_at >= since, h.started_at < until)
        async with self.reading() as conn:
            result = await conn.execute(query.order_by(h.started_at))
            return [dict(row._mapping) for row in result]

    async def book_hardware(self, pool: str, planner: Callable[[Lease], Booking]) -> Booking:
        """Book a drained cost-clock period in `pool` (costing/pool.py): `planner` decides
        from the pool's lease, read and rewritten in this one transaction."""
        async with self.transaction() as conn:
            return await book_in(conn, pool, self.node_id, planner)

    async def record_hardware_period(self, period: HardwarePeriod) -> None:
        """Insert a period as it is, outside any pool's lease (tests and tools seed reports
        with it; the node books through `book_hardware`)."""
        async with self.transaction() as conn:
            await conn.execute(insert(hardware_periods).values(
                period_columns(self.node_id, period)))
