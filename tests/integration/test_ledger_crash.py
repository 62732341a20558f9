"""kill -9 of a process with 50 open requests and reservations loses no ledger row."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from spillgate.ledger.schema import budget_counters, budget_reservations
from spillgate.ledger.store import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ROWS = 50
RESERVED = Decimal("0.0123456789")

# The child begins ROWS streams (each with a paid reservation), waits until the batcher has
# committed the open rows (seen through a separate sqlite3 connection, never via flush()),
# says READY and then hangs, as a gateway mid-stream would.
CHILD = textwrap.dedent("""
    import asyncio, sqlite3, sys
    from datetime import UTC, datetime
    from decimal import Decimal
    from spillgate.tenancy.keys import create_key
    from spillgate.ledger.store import Ledger, RequestStart

    async def main(db, rows, amount):
        ledger = await Ledger.open("sqlite+aiosqlite:///" + db, node_id="node-1")
        key, _ = await create_key(ledger, "crash", daily_budget_usd=Decimal(100))
        print(key.key_id, flush=True)
        for i in range(rows):
            rid = f"stream-{i:03d}"
            ledger.begin(RequestStart(rid, datetime.now(UTC), key_id=key.key_id, tier="api",
                                      stream=True, backend="openai", model="gpt-4o-mini"))
            assert (await ledger.reserve(key.key_id, rid, amount)).ok
        with sqlite3.connect(db) as conn:
            while conn.execute("SELECT count(*) FROM requests").fetchone()[0] < rows:
                await asyncio.sleep(0.01)
        print("READY", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Decimal(sys.argv[3])))
""")


async def test_rows_open_at_kill_9_are_recovered(tmp_path: Path) -> None:
    db = tmp_path / "var" / "ledger.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db), str(ROWS), str(RESERVED),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert child.stdout is not None
        key_id = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        ready = await asyncio.wait_for(child.stdout.readline(), 30)
        assert ready.strip() == b"READY"
        child.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    ledger = await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="node-1")
    try:
        assert await ledger.recover() == ROWS
        assert await ledger.recover() == 0  # idempotent
        now = datetime.now(UTC)
        rows = await ledger.rows_between(now - timedelta(hours=1), now + timedelta(hours=1))
        assert sorted(r["request_id"] for r in rows) == [f"stream-{i:03d}" for i in range(ROWS)]
        for row in rows:
            assert (row["state"], row["usage_source"], row["status"]) == (
                "recovered", "estimated", None)
            assert row["cost_usd"] == RESERVED and row["finished_at"] is not None
        c = budget_counters.c
        async with ledger.reading() as conn:
            assert (await conn.execute(select(budget_reservations))).all() == []
            spent, reserved = (await conn.execute(select(c.spent_usd, c.reserved_usd).where(
                c.key_id == key_id, c.period == f"day:{now:%Y-%m-%d}"))).one()
        assert (spent, reserved) == (RESERVED * ROWS, 0)  # charged in full, nothing held
    finally:
        await ledger.aclose()
