"""The batch tables on SQLite and PostgreSQL: two nodes never claim the same line, a stale
attempt cannot finish a line, a crashed node's lines come back, a batch ends with its files."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy import func, select

from spillgate.batches import lifecycle
from spillgate.batches.files import FileStore
from spillgate.batches.jsonl import InputLine
from spillgate.batches.store import BatchStore, NewBatch
from spillgate.errors import NotFound
from spillgate.ledger.batch_tables import batch_files
from spillgate.ledger.store import Ledger

pytestmark = pytest.mark.parametrize("ledger_dsn", ["sqlite", "postgres"], indirect=True)
URL = "/v1/chat/completions"


def _lines(count: int) -> list[InputLine]:
    return [InputLine(f"c{i}", URL, {"model": "local", "n": i}) for i in range(count)]


async def _batch(store: BatchStore, count: int, owner: str = "k1") -> str:
    row = await store.create(NewBatch(owner, "file-x", URL, "24h", None), _lines(count))
    return str(row["batch_id"])


async def test_two_nodes_claim_disjoint_lines(ledger_dsn: str) -> None:
    a = await Ledger.open(ledger_dsn, node_id="node-a")
    b = await Ledger.open(ledger_dsn, node_id="node-b")
    try:
        store_a, store_b = BatchStore(a), BatchStore(b)
        await _batch(store_a, 40)
        far = a.now()
        claims = await asyncio.gather(*(
            store.claim(3, store.ledger.node_id, spill_from=far)
            for _ in range(10) for store in (store_a, store_b)))
        keys = [(line.batch_id, line.line_no) for claim in claims for line in claim]
        assert len(keys) == len(set(keys)) == 40  # every line once, none twice
        assert {line.attempt for claim in claims for line in claim} == {1}
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_stale_attempt_cannot_finish_and_recovery_retries(ledger_dsn: str) -> None:
    ledger = await Ledger.open(ledger_dsn, node_id="node-a")
    try:
        store = BatchStore(ledger)
        batch_id = await _batch(store, 1)
        (first,) = await store.claim(1, "node-a", spill_from=ledger.now())
        assert await store.recover("node-a", grace_s=600) == 1  # a restart of node-a
        (second,) = await store.claim(1, "node-a", spill_from=ledger.now())
        assert second.attempt == 2 and second.request_id == first.request_id
        assert not await store.finish(first, "done", 200, {"late": True})
        assert await store.finish(second, "done", 200, {"ok": True})
        # Finalizing is a status of its own, committed before the files are written.
        first_round = await lifecycle.advance(ledger)
        assert first_round.ended == [] and first_round.finalizing == [batch_id]
        between = await store.get("k1", batch_id)
        assert between["status"] == "finalizing" and between["finalizing_at"]
        assert between["output_file_id"] is None
        ended = await lifecycle.advance(ledger)
        assert ended.ended == [batch_id]
        got = await store.get("k1", batch_id)
        assert got["status"] == "completed" and got["error_file_id"] is None
        content = await FileStore(ledger).content("k1", got["output_file_id"])
        (line,) = [orjson.loads(x) for x in content.splitlines()]
        assert line["response"]["body"] == {"ok": True} and line["custom_id"] == "c0"
        with pytest.raises(NotFound):
            await FileStore(ledger).content("k2", got["output_file_id"])
    finally:
        await ledger.aclose()


async def test_pages_are_newest_first_and_per_owner(ledger_dsn: str) -> None:
    ledger = await Ledger.open(ledger_dsn, node_id="node-a")
    try:
        store = BatchStore(ledger)
        mine = [await _batch(store, 1) for _ in range(5)]
        await _batch(store, 1, owner="k2")
        first = await store.page("k1", None, 3)
        rest = await store.page("k1", first[-1]["batch_id"], 3)
        assert [r["batch_id"] for r in first + rest] == mine[::-1]
        assert all(r["counts"] == {"pending": 1} for r in first + rest)
    finally:
        await ledger.aclose()


async def test_two_nodes_finalizing_one_batch_write_its_files_once(ledger_dsn: str) -> None:
    a = await Ledger.open(ledger_dsn, node_id="node-a")
    b = await Ledger.open(ledger_dsn, node_id="node-b")
    try:
        store = BatchStore(a)
        batch_id = await _batch(store, 3)
        for line in await store.claim(3, "node-a", spill_from=a.now()):
            assert await store.finish(line, "done", 200, {"n": line.line_no})
        assert (await lifecycle.advance(a)).finalizing == [batch_id]
        # Both replicas (or a restarted node and its peer) finish the finalizing batch.
        won = await asyncio.gather(lifecycle.finalize(a, batch_id),
                                   lifecycle.finalize(b, batch_id))
        assert sorted(won) == [False, True]
        got = await store.get("k1", batch_id)
        assert got["status"] == "completed"
        content = await FileStore(a).content("k1", got["output_file_id"])
        assert [orjson.loads(x)["custom_id"] for x in content.splitlines()] == ["c0", "c1", "c2"]
        async with a.reading() as conn:
            outputs = (await conn.execute(select(func.count()).select_from(batch_files).where(
                batch_files.c.filename.startswith(batch_id)))).scalar()
        assert outputs == 1  # the loser's file was rolled back with its status change
    finally:
        await a.aclose()
        await b.aclose()
