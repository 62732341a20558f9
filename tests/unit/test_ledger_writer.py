"""The ledger's row writer: a plain thread with its own connection on a SQLite file, the
asyncio batcher elsewhere; `flush()` returns only once every row queued before it is
committed, even one the thread has already taken and not yet written."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from spillgate.ledger.record import RequestRecord, Usage
from spillgate.ledger.store import Ledger, RequestOutcome, RequestStart


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


async def test_a_write_cancelled_while_waiting_for_the_lock_does_not_keep_it(
        tmp_path: Path) -> None:
    """A request cancelled (client gone, shutdown) while its budget write waits for SQLite's
    lock must not leave that connection holding the lock once it gets it: every later write
    of the node would wait out the busy timeout and fail."""
    db = tmp_path / "ledger.db"
    ledger = await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        waiting = []
        for _ in range(3):  # a few, so each pooled connection is caught waiting at least once

            async def write() -> None:
                async with ledger.transaction():
                    pass

            task = asyncio.ensure_future(write())
            await asyncio.sleep(0.1)  # its BEGIN IMMEDIATE now waits in the driver's thread
            task.cancel()
            waiting.append(task)
        blocker.execute("ROLLBACK")  # the cancelled BEGINs now get the lock, one by one
        await asyncio.gather(*waiting, return_exceptions=True)
        assert all(task.cancelled() for task in waiting)
        for i in range(3):  # the node can still write: nothing holds the lock
            async with asyncio.timeout(5):
                async with ledger.transaction() as conn:
                    await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
                    await conn.exec_driver_sql("INSERT INTO probe VALUES (?)", (i,))
        with sqlite3.connect(db) as check:
            assert [n for (n,) in check.execute("SELECT n FROM probe ORDER BY n")] == [0, 1, 2]
    finally:
        blocker.close()
        await ledger.aclose()



def _record(rid: str) -> RequestRecord:
    return RequestRecord(
        request_id=rid, key_id="k1", route="auto", stream=True, started_at=1_700_000_000.25,
        tags={"team": "a"}, sensitivity=frozenset({"email", "iban"}), reason="local_ok",
        backend="local", tier="local", model="smollm2", arm="b",
        usage=Usage(prompt_tokens=12, cached_tokens=2, completion_tokens=5), status=200,
        ttft_s=0.05, latency_s=0.25, cost_usd=Decimal("0.0000012345"),
        counterfactual_usd=Decimal("0.0001"))


async def test_record_rows_are_stored_as_the_dataclass_rows_were(tmp_path: Path) -> None:
    """begin_record/finish_record (the dict built by the batcher, issue 14) store the same
    columns as begin/finish with RequestStart/RequestOutcome built on the caller's side; a
    change to the record after it was queued does not reach its row."""
    db = tmp_path / "ledger.db"
    ledger = await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")
    try:
        old, new = _record("old"), _record("new")
        ledger.begin(RequestStart.from_record(old))
        ledger.begin_record(new)
        await ledger.flush()
        opened = await _stored(ledger)
        assert {k: v for k, v in opened["new"].items() if k != "request_id"} == \
            {k: v for k, v in opened["old"].items() if k != "request_id"}
        finished = datetime.now(UTC)
        ledger.finish(RequestOutcome.from_record(old, finished))
        ledger.finish_record(new)
        new.status, new.cost_usd = 500, Decimal(9)  # after it was queued
        await ledger.flush()
        rows = await _stored(ledger)
        assert rows["new"]["status"] == 200 and rows["new"]["cost_usd"] == Decimal("0.0000012345")
        assert abs((rows["new"].pop("finished_at") - rows["old"].pop("finished_at"))
                   .total_seconds()) < 5
        assert {k: v for k, v in rows["new"].items() if k != "request_id"} == \
            {k: v for k, v in rows["old"].items() if k != "request_id"}
    finally:
        await ledger.aclose()


async def _stored(ledger: Ledger) -> dict[str, dict[str, Any]]:
    rows = await ledger.rows_between(datetime(2000, 1, 1, tzinfo=UTC),
                                     datetime(2100, 1, 1, tzinfo=UTC), include_open=True)
    return {str(r["request_id"]): dict(r) for r in rows}


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
        # SQLAlchemy's error (asyncio batcher) or the driver's (thread: executemany itself)
        with pytest.raises((IntegrityError, sqlite3.IntegrityError), match="refused"):
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
