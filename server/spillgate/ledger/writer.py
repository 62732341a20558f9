"""Write-behind for request rows: queued on the event loop in a microsecond, committed in
batches off it.

The request path only appends to a deque. On SQLite a plain thread owns its own sqlite3
connection (SQLAlchemy's synchronous pysqlite engine, same WAL pragmas and BEGIN IMMEDIATE)
and group-commits what is queued every BATCH_INTERVAL_S or BATCH_MAX rows, so the event
loop never pays for statement compilation, greenlet switches or aiosqlite's thread hops per
batch. On PostgreSQL (and an in-memory SQLite database, which a second connection could not
see) the batcher stays an asyncio task on the ledger's own AsyncEngine. Both run the same
synchronous `write_batch`, so the rows and the rollup written are identical.

Durability is unchanged: an open row is committed within ~20-50 ms of `begin`, a failed write
keeps its rows queued and retries after RETRY_S, and `flush()` writes everything queued
before it returns (raising if the database refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Insert, bindparam, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from spillgate.ledger import rollup
from spillgate.ledger.migrations import sqlite_begin, sqlite_connect
from spillgate.ledger.rows import RecordRow
from spillgate.ledger.schema import requests

log = logging.getLogger(__name__)
BATCH_INTERVAL_S = 0.02
BATCH_MAX = 200  # wake the batcher early at this many queued rows
WRITE_MAX = 2000  # rows per transaction when catching up
RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class RowOp:
    request_id: str
    row: dict[str, Any] | RecordRow  # a RecordRow is built into its dict by the batcher
    final: bool

    def columns(self) -> dict[str, Any]:
        return self.row if isinstance(self.row, dict) else self.row.columns()


class RowStatements:
    """The two statements of the hot write, built once per dialect; on SQLite, each also
    compiled once per set of columns (`execute`)."""

    def __init__(self, dialect_name: str) -> None:
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled | None] = {}
        dialect = sqlite if dialect_name == "sqlite" else postgresql
        self.insert_open = dialect.insert(requests).on_conflict_do_nothing(
            index_elements=["request_id"])
        final = dialect.insert(requests)
        # feedback arrives after the answer (POST /v1/feedback): a late final row keeps it
        kept = ("request_id", "node_id", "started_at", "feedback", "feedback_at")
        self.upsert_final = final.on_conflict_do_update(
            index_elements=["request_id"],
            set_={c.name: final.excluded[c.name] for c in requests.c if c.name not in kept},
        )


    def execute(self, conn: Connection, stmt: Insert, rows: list[dict[str, Any]]) -> None:
        """Execute `stmt` for the rows (all with the same columns). On a SQLite file the
        statement's SQL and its columns' bind processors are built once and the rows go to
        the driver's executemany in the connection's transaction: SQLAlchemy's execution
        context cost more per row than the driver (most of the writer thread's time,
        py-spy). The asyncio batcher (PostgreSQL, in-memory SQLite) lets SQLAlchemy execute."""
        if conn.dialect.driver != "pysqlite":  # the writer thread's own connection only
            conn.execute(stmt, rows)
            return
        names = tuple(rows[0])
        key = (id(stmt), names)
        if key not in self._compiled:
            self._compiled[key] = _Compiled.of(conn, stmt, names)
        compiled = self._compiled[key]
        if compiled is None:
            conn.execute(stmt, rows)
        else:
            compiled.run(conn, rows)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    order: tuple[str, ...]  # the parameters, in the statement's order
    processors: tuple[Callable[[Any], Any] | None, ...]
    defaults: dict[str, Any]  # parameters no row carries: the columns' scalar defaults

    @classmethod
    def of(cls, conn: Connection, stmt: Insert, names: tuple[str, ...]) -> _Compiled | None:
        """None when a parameter is neither a row key nor a column with a scalar default
        (SQLAlchemy then executes the statement itself)."""
        compiled = stmt.values({n: bindparam(n) for n in names}).compile(dialect=conn.dialect)
        order = tuple(compiled.positiontup or ())
        defaults: dict[str, Any] = {}
        for name in order:
            if name in names:
                continue
            default = requests.c[name].default if name in requests.c else None
            if not isinstance(default, ScalarElementColumnDefault):
                return None
            defaults[name] = default.arg
        dialect = conn.dialect  # the processors SQLAlchemy itself applies: the dialect's impl
        processors = tuple(requests.c[n].type.dialect_impl(dialect).bind_processor(dialect)
                           for n in order)
        return cls(str(compiled), order, processors, defaults)

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        pairs = tuple(zip(self.order, self.processors, strict=True))
        if self.defaults:
            rows = [self.defaults | row for row in rows]
        params = [tuple(row[n] if p is None else p(row[n]) for n, p in pairs) for row in rows]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self.sql, params)
        finally:
            cursor.close()


def write_batch(conn: Connection, batch: Sequence[RowOp], stmts: RowStatements) -> None:
    """Write a batch in the caller's transaction; begin+finish of one request in the same
    batch collapse into its final upsert. The rollup follows the final rows."""
    opened: dict[str, dict[str, Any]] = {}
    final: dict[str, dict[str, Any]] = {}
    for op in batch:
        if op.final:
            final[op.request_id] = op.columns()
            opened.pop(op.request_id, None)
        elif op.request_id not in final:
            opened[op.request_id] = op.columns()
    if opened:
        _by_columns(conn, stmts, stmts.insert_open, opened.values())
    if final:
        stored = rollup.stored_final_rows_sync(conn, list(final))
        _by_columns(conn, stmts, stmts.upsert_final, final.values())
        rollup.apply_sync(conn, rollup.deltas(stored, final.values()))


def _by_columns(conn: Connection, stmts: RowStatements, stmt: Insert,
                rows: Iterable[dict[str, Any]]) -> None:
    """One executemany per set of columns (rows from RequestStart/RequestOutcome share one)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for group in groups.values():
        stmts.execute(conn, stmt, group)


class RowWriter(Protocol):
    """Where `Ledger.begin`/`finish` put rows."""

    def put(self, op: RowOp) -> None: ...
    @property
    def pending(self) -> int: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...


class _Queue:
    """The deque both writers drain (append and popleft are atomic under the GIL), and what
    both do with it; the subclasses differ only in where a batch is written."""

    def __init__(self, wake_writer: Callable[[], None]) -> None:
        self.queue: deque[RowOp] = deque()
        self.closing = False
        self._wake_writer = wake_writer  # called on a first row and on a full batch

    @property
    def pending(self) -> int:
        return len(self.queue)

    def put(self, op: RowOp) -> None:
        if self.closing:
            raise RuntimeError("ledger is closed")
        self.queue.append(op)
        if len(self.queue) in (1, BATCH_MAX):
            self._wake_writer()

    @contextlib.contextmanager
    def taken(self) -> Iterator[list[RowOp]]:
        """The next batch off the queue; back at its head if writing it fails."""
        batch = [self.queue.popleft() for _ in range(min(WRITE_MAX, len(self.queue)))]
        try:
            yield batch
        except BaseException:
            self.queue.extendleft(reversed(batch))
            raise

    def retry_after_failure(self) -> bool:
        """A batch failed (the rows stay queued; the request path must not notice): log it,
        and say whether to try again after RETRY_S (not once closing)."""
        log.exception("ledger write failed; %d rows stay queued", len(self.queue))
        return not self.closing


class ThreadedWriter(_Queue):
    """A plain thread with its own synchronous connection commits the batches."""

    def __init__(self, engine: Engine) -> None:
        self._wake = threading.Event()
        super().__init__(self._wake.set)
        self._engine = engine
        self._stmts = RowStatements(engine.dialect.name)
        self._lock = threading.Lock()  # one batch at a time: the thread, or a flush
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    async def flush(self) -> None:
        # Always through the lock, even with nothing queued: the thread may hold a batch it
        # has taken off the queue and not yet committed.
        await asyncio.to_thread(self._write_queued)

    async def aclose(self) -> None:
        self.closing = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        try:
            await self.flush()
        finally:
            self._engine.dispose()

    def _write_queued(self) -> None:
        with self._lock:
            while self.queue:
                with self.taken() as batch, self._engine.begin() as conn:
                    write_batch(conn, batch, self._stmts)

    def _run(self) -> None:
        while not (self.closing and not self.queue):
            self._wake.wait()
            self._gather()
            self._wake.clear()
            try:
                self._write_queued()
            except Exception:
                if not self.retry_after_failure():
                    return
                time.sleep(RETRY_S)
                self._wake.set()

    def _gather(self) -> None:
        """Let a batch build up for BATCH_INTERVAL_S, or until BATCH_MAX rows are queued."""
        deadline = time.monotonic() + BATCH_INTERVAL_S
        while len(self.queue) < BATCH_MAX and not self.closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            self._wake.wait(left)


class LoopWriter(_Queue):
    """An asyncio task commits the batches through the ledger's AsyncEngine."""

    def __init__(self, engine: AsyncEngine, lock: asyncio.Lock | None) -> None:
        self._wake = asyncio.Event()
        super().__init__(self._wake.set)
        self._engine = engine
        self._stmts = RowStatements(engine.dialect.name)
        self._lock = lock or contextlib.nullcontext()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-batcher")

    async def flush(self) -> None:
        async with self._flush_lock:
            while self.queue:
                with self.taken() as batch:
                    async with self._lock, self._engine.begin() as conn:
                        await conn.run_sync(write_batch, batch, self._stmts)

    async def aclose(self) -> None:
        self.closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while not (self.closing and not self.queue):
            await self._wake.wait()
            await self._gather()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                if not self.retry_after_failure():
                    return
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_INTERVAL_S
        while len(self.queue) < BATCH_MAX and not self.closing:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)


def sync_sqlite_engine(dsn: str) -> Engine | None:
    """A synchronous engine on the same SQLite file as `dsn`, or None when the DSN is not a
    SQLite file (PostgreSQL; an in-memory database a second connection would not see)."""
    url = make_url(dsn)
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    # Used by the writer thread and by a flush's worker thread, one at a time (a lock).
    engine = create_engine(url.set(drivername="sqlite"), pool_reset_on_return=None,
                           connect_args={"check_same_thread": False})
    event.listen(engine, "connect", sqlite_connect)
    event.listen(engine, "begin", sqlite_begin)
    return engine
