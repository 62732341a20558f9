"""Write-behind for request rows: queued on the event loop in a microsecond, committed in
batches off it.

The request path only appends to a deque. On SQLite a plain thread owns its own sqlite3
connection (SQLAlchemy's synchronous pysqlite engine for its pool and WAL pragmas, the
batches written straight on the driver: direct.py) and group-commits what is queued every
BATCH_INTERVAL_S or BATCH_MAX rows, so the event loop never pays for statement compilation,
greenlet switches or aiosqlite's thread hops per batch. On PostgreSQL (and an in-memory
SQLite database, which a second connection could not see) the batcher stays an asyncio task
on the ledger's own AsyncEngine, running `write_batch` through SQLAlchemy. Both paths execute
the same statements (row_ops.py), so the rows and the rollup written are identical.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from spillgate.ledger import rollup
from spillgate.ledger.direct import DirectWriter
from spillgate.ledger.migrations import sqlite_begin, sqlite_connect
from spillgate.ledger.row_ops import RowOp, RowStatements, by_columns, split

__all__ = ["LoopWriter", "RowOp", "RowStatements", "RowWriter", "ThreadedWriter",
           "sync_sqlite_engine", "write_batch"]  # fmt: skip
log = logging.getLogger(__name__)
BATCH_INTERVAL_S = 0.02
BATCH_MAX = 200  # wake the batcher early at this many queued rows
WRITE_MAX = 2000  # rows per transaction when catching up
RETRY_S = 1.0


def write_batch(conn: Connection, batch: Sequence[RowOp], stmts: RowStatements) -> None:
    """Write a batch in the caller's transaction through SQLAlchemy (the asyncio batcher);
    the rollup follows the final rows. DirectWriter.write does the same on the driver."""
    opened, final = split(batch)
    for group in by_columns(opened.values()):
        conn.execute(stmts.insert_open, group)
    if final:
        stored = rollup.stored_final_rows_sync(conn, list(final))
        for group in by_columns(final.values()):
            conn.execute(stmts.upsert_final, group)
        rollup.apply_sync(conn, rollup.deltas(stored, final.values()))


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
        self._direct = DirectWriter(engine)
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
            self._direct.close()
            self._engine.dispose()

    def _write_queued(self) -> None:
        with self._lock:
            while self.queue:
                with self.taken() as batch:
                    self._direct.write(batch)

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
