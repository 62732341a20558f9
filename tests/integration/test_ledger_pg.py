"""Two gateway replicas (two Ledgers, two engines) on one PostgreSQL database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from spillgate.ledger.migrations import MIGRATIONS
from spillgate.ledger.schema import budget_counters, schema_version
from spillgate.ledger.store import Ledger, RequestOutcome, RequestStart
from spillgate.tenancy.keys import KeyStore, create_key
from tests.pg import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.postgres,
              pytest.mark.asyncio(loop_scope="session")]
CENT = Decimal("0.01")


async def test_two_replicas_start_together_and_share_one_budget(pg_dsn: str) -> None:
    dsn = await fresh_database(pg_dsn)
    # Both migrate at once: the advisory lock makes one wait; the schema is created once.
    a, b = await asyncio.gather(Ledger.open(dsn, node_id="replica-a"),
                                Ledger.open(dsn, node_id="replica-b"))
    try:
        async with a.reading() as conn:
            versions = (await conn.execute(select(schema_version.c.version))).scalars().all()
        assert versions == [v for v, _ in MIGRATIONS]  # each step applied exactly once
        key, secret = await create_key(a, "shared", daily_budget_usd=Decimal(1),
                                       monthly_budget_usd=Decimal(30))
        assert (await KeyStore(b).authenticate(secret)) is not None  # keys are shared via the DB
        now = datetime.now(UTC)

        async def call(ledger: Ledger, i: int) -> bool:
            rid = f"{ledger.node_id}-{i}"
            ledger.begin(RequestStart(rid, now, key_id=key.key_id, tier="api"))
            result = await ledger.reserve(key.key_id, rid, CENT, now)
            if result.ok:
                await ledger.settle(key.key_id, rid, CENT, CENT * 3 / 4)
            ledger.finish(RequestOutcome(RequestStart(rid, now, key_id=key.key_id, tier="api"),
                                         now, 200 if result.ok else 429,
                                         cost_usd=CENT * 3 / 4 if result.ok else Decimal(0)))
            return result.ok

        outcomes = await asyncio.gather(*(call(led, i) for i in range(150) for led in (a, b)))
        await asyncio.gather(a.flush(), b.flush())
        c = budget_counters.c
        async with b.reading() as conn:
            day = (await conn.execute(select(c.limit_usd, c.spent_usd, c.reserved_usd).where(
                c.key_id == key.key_id, c.period == f"day:{now:%Y-%m-%d}"))).one()
        served = sum(outcomes)
        assert day.reserved_usd == 0 and day.spent_usd == served * CENT * 3 / 4
        assert day.spent_usd <= day.limit_usd
        # A refusal needs spent + reserved > $0.99, i.e. more than 99 calls admitted.
        assert served == 300 or served >= 100
        rows = await a.rows_between(now, datetime(2100, 1, 1, tzinfo=UTC))
        assert len(rows) == 300 and {r["node_id"] for r in rows} == {"replica-a", "replica-b"}
        paid = sum((r["cost_usd"] for r in rows), Decimal(0))
        assert paid == day.spent_usd  # the ledger rows and the budget agree to the cent
    finally:
        await a.aclose()
        await b.aclose()
