"""The ledger's row writer: a plain thread with its own connection on a SQLite file, the
asyncio batcher elsewhere; `flush()` returns only once every row queued before it is
committed, even one the thread has already taken and not yet written."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from spillgate.ledger.store import Ledger, RequestStart


def start(rid: str) -> RequestStart:
    return RequestStart(rid, datetime.now(UTC), tier="local", backend="local", model="m")


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM requests")}


async def test_rows_reach_the_file_from_the_writer_thread_without_a_flush(
        tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")
    try:
        assert any(t.name == "ledger-writer" for t in threading.enumerate())
        for i in range(5):
            ledger.begin(start(f"r{i}"))
        for _ in range(200):  # committed within ~20-50 ms; allow a loaded machine 4 s
            if stored_ids(db) == {f"r{i}" for i in range(5)}:
                break
            await asyncio.sleep(0.02)
        assert stored_ids(db) == {f"r{i}" for i in range(5)}
    finally:
        await ledger.aclose()


async def test_flush_waits_for_the_batch_the_thread_is_writing(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        ledger.begin(start("held"))
        for _ in range(200):  # the thread takes the row off the queue, then waits to write
            if ledger.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert ledger.pending == 0
        flushing = asyncio.ensure_future(ledger.flush())
        await asyncio.sleep(0.3)
        assert not flushing.done()  # nothing queued, but the row is not committed yet
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(flushing, 15)
        assert stored_ids(db) == {"held"}
    finally:
        blocker.close()
        await ledger.aclose()


async def test_an_in_memory_ledger_keeps_the_asyncio_batcher() -> None:
    ledger = await Ledger.open("sqlite+aiosqlite:///:memory:", node_id="n")
    try:
        ledger.begin(start("mem"))
        await ledger.flush()
        rows = await ledger.rows_between(datetime(2000, 1, 1, tzinfo=UTC),
                                         datetime(2100, 1, 1, tzinfo=UTC), include_open=True)
        assert [r["request_id"] for r in rows] == ["mem"]
    finally:
        await ledger.aclose()


@pytest.mark.parametrize("where", ["file", "memory"])  # the writer thread; the asyncio batcher
async def test_rows_the_database_refuses_stay_queued_and_are_written_later(
        tmp_path: Path, where: str) -> None:
    dsn = ("sqlite+aiosqlite:///:memory:" if where == "memory"
           else f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    ledger = await Ledger.open(dsn, node_id="n")
    try:
        async with ledger.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON requests "
                                       "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        for rid in ("a", "b", "c"):
            ledger.begin(start(rid))
        with pytest.raises(IntegrityError, match="refused"):
            await ledger.flush()
        async with ledger.engine.begin() as conn:
            await conn.exec_driver_sql("DROP TRIGGER refuse")
        await ledger.flush()
        assert ledger.pending == 0
        rows = await ledger.rows_between(datetime(2000, 1, 1, tzinfo=UTC),
                                         datetime(2100, 1, 1, tzinfo=UTC), include_open=True)
        assert sorted(r["request_id"] for r in rows) == ["a", "b", "c"]
    finally:
        await ledger.aclose()
