"""Cascade drafts' cost (`draft_usd`) in the main report and the hourly rollup (SQLite and
PostgreSQL): a planner sees what drafts cost beside the API and local figures, and actual
spend includes it. Every figure is recomputed by hand from the raw rows the test wrote;
the window cuts hours so both the rollup and the edge GROUP BY are read. Migration 13 fills
the rollup's new column for a ledger whose rollup predates it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text

from spillgate.ledger.migrations import migrate
from spillgate.ledger.rollup import request_rollup
from spillgate.ledger.schema import requests, schema_version
from spillgate.ledger.store import Ledger, RequestOutcome, RequestStart
from spillgate.reports.figures import report_from_views
from spillgate.reports.query import read_inputs
from tests.unit.test_reports import BOOK, PROFILE, REF

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
QUANTUM = Decimal("0.0000000001")  # the ledger keeps money to 1e-10


def generated_rows(seed: int = 15) -> list[dict[str, Any]]:
    """Kept drafts (local, no draft cost), escalations (API rows with a draft cost),
    failed escalations (local rows with both), plain API and local rows, over four hours."""
    rng = random.Random(seed)
    rows = []
    for i in range(40):
        kind = rng.choice(["kept", "escalated", "escalation_failed", "api", "local"])
        tier = "api" if kind in ("escalated", "api") else "local"
        draft = (Decimal(rng.randint(1, 10**6)) * QUANTUM * 1000
                 if kind in ("escalated", "escalation_failed") else Decimal(0))
        rows.append({
            "request_id": f"r{i}", "key_id": rng.choice(["k1", "k2"]),
            "tags": {"team": rng.choice(["a", "b"])}, "tier": tier,
            "reason": f"cascade_{kind}" if kind not in ("api", "local") else "local_ok",
            "started_at": T0 + timedelta(minutes=rng.randint(0, 239)),
            "prompt_tokens": rng.randint(1, 500), "completion_tokens": rng.randint(1, 200),
            "cost_usd": Decimal(rng.randint(1, 10**6)) * QUANTUM * 1000, "draft_usd": draft,
        })
    return rows


async def fill(ledger: Ledger, rows: list[dict[str, Any]]) -> None:
    for raw in rows:
        start = RequestStart(request_id=raw["request_id"], started_at=raw["started_at"],
                             key_id=raw["key_id"], tags=raw["tags"], reason=raw["reason"],
                             tier=raw["tier"], route="cascade")
        ledger.begin(start)
        ledger.finish(RequestOutcome(
            start, finished_at=raw["started_at"] + timedelta(seconds=1), status=200,
            prompt_tokens=raw["prompt_tokens"], completion_tokens=raw["completion_tokens"],
            cost_usd=raw["cost_usd"], draft_usd=raw["draft_usd"]))
    await ledger.flush()


def total(rows: list[dict[str, Any]], column: str, **where: Any) -> Decimal:
    return sum((r[column] for r in rows if all(r[k] == v for k, v in where.items())),
               Decimal(0))


async def test_drafts_are_split_out_in_totals_series_keys_and_tags(ledger_dsn: str) -> None:
    rows = generated_rows()
    ledger = await Ledger.open(ledger_dsn, node_id="node-a")
    try:
        await fill(ledger, rows)
        since, until = T0 + timedelta(minutes=30), T0 + timedelta(minutes=210)
        views, periods = await read_inputs(ledger.engine, since, until)
        report = report_from_views(views, periods, since=since, until=until, bucket="hour",
                                   price_book=BOOK, reference_model=REF,
                                   hardware_profile=PROFILE)
    finally:
        await ledger.aclose()
    inside = [r for r in rows if since <= r["started_at"] < until]
    assert total(inside, "draft_usd") > 0  # the window holds drafts on both tiers
    assert total(inside, "draft_usd", tier="api") > 0
    assert total(inside, "draft_usd", tier="local") > 0
    t = report["totals"]
    assert Decimal(t["draft_usd"]) == total(inside, "draft_usd")
    assert Decimal(t["api_usd"]) == total(inside, "cost_usd", tier="api")
    assert Decimal(t["local_busy_usd"]) == total(inside, "cost_usd", tier="local")
    assert Decimal(t["actual_usd"]) == (total(inside, "cost_usd") + total(inside, "draft_usd")
                                        + Decimal(t["idle_usd"]))
    for bucket in report["series"]:
        start = datetime.fromisoformat(bucket["start"])
        hour = [r for r in inside if start <= r["started_at"] < start + timedelta(hours=1)]
        assert Decimal(bucket["draft_usd"]) == total(hour, "draft_usd")
    for key in ("k1", "k2"):
        part = report["by_key"][key]
        assert Decimal(part["draft_usd"]) == total(inside, "draft_usd", key_id=key)
        assert Decimal(part["cost_usd"]) == (total(inside, "cost_usd", key_id=key)
                                             + total(inside, "draft_usd", key_id=key))
    for team in ("a", "b"):
        tagged = [r for r in inside if r["tags"]["team"] == team]
        assert Decimal(report["by_tag"][f"team={team}"]["draft_usd"]) == total(
            tagged, "draft_usd")


async def test_the_rollup_keeps_draft_sums_and_migration_13_fills_an_older_rollup(
        ledger_dsn: str) -> None:
    rows = generated_rows(seed=16)
    ledger = await Ledger.open(ledger_dsn, node_id="node-a")
    try:
        await fill(ledger, rows)
        async with ledger.engine.begin() as conn:
            r = request_rollup.c
            summed = (await conn.execute(select(func.sum(r.draft_usd)))).scalar()
            assert Decimal(summed) == total(rows, "draft_usd")
            # the rollup as a ledger before migration 13 had it: no draft column
            await conn.execute(text("ALTER TABLE request_rollup DROP COLUMN draft_usd"))
            await conn.execute(delete(schema_version).where(schema_version.c.version == 13))
        assert await migrate(ledger.engine) == [13]
        assert await migrate(ledger.engine) == []  # idempotent
        async with ledger.engine.connect() as conn:
            by_hour = {row.hour: Decimal(row.d) for row in await conn.execute(
                select(r.hour, func.sum(r.draft_usd).label("d")).group_by(r.hour))}
            stored = {row.request_id: Decimal(row.draft_usd) for row in await conn.execute(
                select(requests.c.request_id, requests.c.draft_usd))}
    finally:
        await ledger.aclose()
    assert stored == {r["request_id"]: r["draft_usd"] for r in rows}
    by_hand: dict[datetime, Decimal] = {}
    for raw in rows:
        hour = raw["started_at"].replace(minute=0)
        by_hand[hour] = by_hand.get(hour, Decimal(0)) + raw["draft_usd"]
    assert {h if h.tzinfo else h.replace(tzinfo=UTC): v for h, v in by_hour.items()} == by_hand
