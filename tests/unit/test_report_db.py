"""The report read from a real ledger (SQLite and PostgreSQL): the hourly rollup the batcher
keeps, the GROUP BY at the window's edges, and GET /admin/report's formats, window cap and
event loop. Figures are checked against hand sums over the rows the test wrote."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from spillgate.api import health
from spillgate.api.admin_reports import admin_report_router
from spillgate.costing.costclock import HardwarePeriod
from spillgate.ledger.migrations import migrate
from spillgate.ledger.rollup import request_rollup
from spillgate.ledger.schema import schema_version
from spillgate.ledger.store import Ledger, RequestOutcome, RequestStart
from spillgate.reports.figures import build_report, report_from_views
from spillgate.reports.gather import ReportSources
from spillgate.reports.query import read_inputs
from spillgate.web import install_error_handlers
from tests.unit.test_reports import BOOK, PERIODS, PROFILE, REF, ROWS, T0, UNTIL, recompute, report

pytestmark = pytest.mark.asyncio(loop_scope="session")


def outcome(raw: dict[str, Any]) -> RequestOutcome:
    """The fixture row as the node would write it."""
    begun = RequestStart(
        request_id=raw["request_id"], started_at=raw["started_at"], key_id=raw["key_id"],
        tags=json.loads(raw["tags"]), reason=raw["reason"], tier=raw["tier"],
        sensitivity=raw["sensitivity"],
    )  # fmt: skip
    return RequestOutcome(
        begun, finished_at=raw["finished_at"], status=200, prompt_tokens=raw["prompt_tokens"],
        cached_tokens=raw["cached_tokens"], completion_tokens=raw["completion_tokens"],
        cost_usd=raw["cost_usd"], counterfactual_usd=raw["counterfactual_usd"],
    )  # fmt: skip


async def fill(ledger: Ledger, rows: list[dict[str, Any]]) -> None:
    for raw in rows:
        if raw["state"] == "settled":
            ledger.begin(outcome(raw).start)
            ledger.finish(outcome(raw))
        else:  # begun, never finished: an open row, no final cost
            ledger.begin(outcome(raw).start)
    for p in PERIODS:
        await ledger.record_hardware_period(HardwarePeriod(
            p["started_at"], p["started_at"] + timedelta(hours=1), p["busy_s"], p["idle_s"],
            p["busy_usd"], p["idle_usd"], None, PROFILE.name))  # fmt: skip
    await ledger.flush()


@pytest.fixture
async def ledger(ledger_dsn: str) -> AsyncIterator[Ledger]:
    led = await Ledger.open(ledger_dsn, node_id="node-a")
    await fill(led, ROWS)
    yield led
    await led.aclose()


async def db_report(ledger: Ledger, since: datetime, until: datetime) -> dict[str, Any]:
    views, periods = await read_inputs(ledger.engine, since, until)
    return report_from_views(views, periods, since=since, until=until, bucket="hour",
                              price_book=BOOK, reference_model=REF, hardware_profile=PROFILE)


def hand_totals(since: datetime, until: datetime) -> dict[str, Any]:
    kept = [r for r in ROWS if r["state"] == "settled" and since <= r["started_at"] < until]
    return recompute(kept) | {"requests": len(kept)}


@pytest.mark.parametrize(("start_min", "end_min"), [
    (0, 180),  # whole hours: all from the rollup
    (25, 170),  # ragged edges: GROUP BY over the rows of the two partial hours
    (35, 50),  # inside one hour
    (-600, 600),  # wider than the data
])  # fmt: skip
async def test_database_report_matches_hand_sums(ledger: Ledger, start_min: int,
                                                 end_min: int) -> None:  # fmt: skip
    since, until = T0 + timedelta(minutes=start_min), T0 + timedelta(minutes=end_min)
    t, mine = (await db_report(ledger, since, until))["totals"], hand_totals(since, until)
    assert t["requests"] == mine["requests"]
    assert (t["local_tokens"], t["api_tokens"]) == (mine["local_tokens"], mine["api_tokens"])
    assert Decimal(t["local_busy_usd"]) == mine["local_usd"]
    assert Decimal(t["api_usd"]) == mine["api_usd"]
    assert Decimal(t["spill_usd"]) == mine["spill_usd"]
    assert Decimal(t["all_api_usd"]) == mine["cf"] + mine["api_usd"]


async def test_database_report_equals_the_report_over_raw_rows(ledger: Ledger) -> None:
    assert await db_report(ledger, T0, UNTIL) == report()
    since, until = T0 + timedelta(minutes=25), T0 + timedelta(minutes=170)
    over_rows = build_report(ROWS, PERIODS, since=since, until=until, price_book=BOOK,
                             reference_model=REF, hardware_profile=PROFILE)  # fmt: skip
    assert await db_report(ledger, since, until) == over_rows


async def rollup_totals(ledger: Ledger) -> tuple[int, int, Decimal]:
    async with ledger.reading() as conn:
        row = (await conn.execute(select(
            func.sum(request_rollup.c.requests), func.sum(request_rollup.c.completion_tokens),
            func.sum(request_rollup.c.cost_usd, type_=request_rollup.c.cost_usd.type),
        ))).one()  # fmt: skip
    return int(row[0] or 0), int(row[1] or 0), Decimal(row[2] or 0)


async def test_rollup_follows_a_row_finished_again_and_recovery(ledger: Ledger) -> None:
    settled = [r for r in ROWS if r["state"] == "settled"]
    before = (len(settled), sum(r["completion_tokens"] for r in settled),
              sum((r["cost_usd"] for r in settled), Decimal(0)))  # fmt: skip
    assert await rollup_totals(ledger) == before
    # A row written again with other figures (a stream finishing after recovery) replaces
    # its contribution; it keeps its start hour.
    again = outcome(settled[0])
    ledger.finish(RequestOutcome(again.start, again.finished_at, 200, prompt_tokens=7,
                                 completion_tokens=11, cost_usd=Decimal("0.25")))
    await ledger.flush()
    expected = (before[0], before[1] - settled[0]["completion_tokens"] + 11,
                before[2] - settled[0]["cost_usd"] + Decimal("0.25"))  # fmt: skip
    assert await rollup_totals(ledger) == expected
    # Recovery closes the open row (no tokens, no cost): one more request, same sums.
    assert await ledger.recover() == 1
    assert await rollup_totals(ledger) == (expected[0] + 1, expected[1], expected[2])


async def test_migration_fills_the_rollup_of_an_older_ledger(ledger: Ledger) -> None:
    before = await rollup_totals(ledger)
    async with ledger.transaction() as conn:
        await conn.execute(delete(request_rollup))
        await conn.execute(delete(schema_version).where(schema_version.c.version == 3))
    assert await rollup_totals(ledger) == (0, 0, Decimal(0))
    assert 3 in await migrate(ledger.engine)
    assert await rollup_totals(ledger) == before
    assert await db_report(ledger, T0, UNTIL) == report()


async def test_rollup_equals_hand_sums_after_random_writes(ledger_dsn: str) -> None:
    """Begins, finishes, rows finished again with other figures, in batches, then a
    recovery: the rollup equals plain sums over the final rows as stored."""
    rng = random.Random(11)
    led = await Ledger.open(ledger_dsn, node_id="node-r")
    try:
        for _batch in range(6):
            for _ in range(60):
                n = rng.randrange(150)  # a request's rows share its start, as the node writes
                begun = RequestStart(
                    f"x{n}", T0 + timedelta(minutes=2 * n, seconds=n % 7),
                    key_id=rng.choice([None, "a", "b"]),
                    tags=rng.choice([{}, {"t": "1"}, {"u": "2", "t": "1"}]),
                    reason=rng.choice(["local_first", "overflow:queue", "local_unavailable"]),
                    tier=rng.choice(["local", "api"]), sensitivity=rng.choice(["", "email"]),
                )  # fmt: skip
                if rng.random() < 0.3:
                    led.begin(begun)
                    continue
                led.finish(RequestOutcome(
                    begun, begun.started_at + timedelta(seconds=1), rng.choice([200, 500]),
                    prompt_tokens=rng.randrange(3) * rng.randrange(100),
                    completion_tokens=rng.randrange(50),
                    cost_usd=Decimal(rng.randrange(10**6)).scaleb(-9),
                ))  # fmt: skip
            await led.flush()
        await led.recover()
        stored = await led.rows_between(T0 - timedelta(days=1), T0 + timedelta(days=1))
        hand: dict[tuple[datetime, str, str], list[Any]] = {}
        for r in stored:
            hour = r["started_at"].replace(minute=0, second=0, microsecond=0)
            cell = hand.setdefault((hour, r["key_id"] or "", r["tier"]), [0, 0, Decimal(0)])
            cell[0] += 1
            cell[1] += r["prompt_tokens"] + r["completion_tokens"]
            cell[2] += r["cost_usd"]
        rolled: dict[tuple[datetime, str, str], list[Any]] = {}
        async with led.reading() as conn:
            for g in await conn.execute(select(request_rollup)):
                cell = rolled.setdefault((g.hour, g.key_id, g.tier), [0, 0, Decimal(0)])
                cell[0] += g.requests
                cell[1] += g.prompt_tokens + g.completion_tokens
                cell[2] += g.cost_usd
        assert {k: v for k, v in rolled.items() if v[0]} == hand
    finally:
        await led.aclose()


# --- GET /admin/report ---------------------------------------------------------------------
def report_app(ledger: Ledger) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.ledger = ledger
    app.state.price_book = BOOK
    app.include_router(admin_report_router(ReportSources(PROFILE, REF, 1)))
    app.include_router(health.router)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node",
                             timeout=120)  # fmt: skip


WINDOW = {"since": T0.isoformat(), "until": UNTIL.isoformat(), "bucket": "hour"}


@pytest.mark.parametrize(("fmt", "media", "marker"), [
    ("json", "application/json", '"totals"'),
    ("html", "text/html", "<!doctype html>"),
    ("md", "text/markdown", "# Spillgate cost report"),
    ("csv", "text/csv", "bucket_start,"),
])  # fmt: skip
async def test_admin_report_answers_each_format(ledger: Ledger, fmt: str, media: str,
                                                marker: str) -> None:  # fmt: skip
    async with client(report_app(ledger)) as http:
        got = await http.get("/admin/report", params=WINDOW | {"format": fmt})
    assert got.status_code == 200
    assert got.headers["content-type"].split(";")[0] == media
    assert marker in got.text
    if fmt == "json":
        assert got.json() == json.loads(json.dumps(report()))


@pytest.mark.parametrize(("params", "param"), [
    ({"since": "0001-01-01"}, "since"),  # ~740k day buckets
    ({"since": "2025-01-01", "until": "2026-12-01", "bucket": "hour"}, "since"),  # 16.8k hours
    ({"since": "yesterday-ish"}, "since/until"),
    ({"format": "pdf"}, "format"),
    ({"bucket": "week"}, "bucket"),
])  # fmt: skip
async def test_admin_report_refuses_bad_windows_in_the_openai_shape(
    ledger: Ledger, params: dict[str, str], param: str
) -> None:
    async with client(report_app(ledger)) as http:
        got = await http.get("/admin/report", params=params)
    assert got.status_code == 400
    error = got.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_healthz_answers_while_a_big_report_is_in_flight(ledger: Ledger) -> None:
    """The largest window allowed (10,000 day buckets), rendered as HTML, runs off the event
    loop: /healthz keeps answering while it is computed."""
    until = datetime(2026, 1, 1, tzinfo=UTC)
    params = {"since": (until - timedelta(days=9_999)).isoformat(), "until": until.isoformat(),
              "bucket": "day", "format": "html"}
    async with client(report_app(ledger)) as http:
        big = asyncio.create_task(http.get("/admin/report", params=params))
        answered_during = 0
        while not big.done():
            health_reply = await asyncio.wait_for(http.get("/healthz"), timeout=10)
            assert health_reply.status_code == 200
            answered_during += not big.done()
            await asyncio.sleep(0.01)
        reply = await big
    assert reply.status_code == 200 and reply.text.count("<svg") == 3
    assert answered_during >= 1
