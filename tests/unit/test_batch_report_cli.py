"""`spillgate report` shows the batch figures of GET /admin/report/batches in every format,
recomputed here by hand from the raw ledger rows (sqlite3, not the code under test)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from spillgate.cli import main as cli_main
from spillgate.costing.costclock import HardwarePeriod
from tests.batch_support import auth, batch_harness, chat_line, start_batch, wait_status

ADMIN = "admin-key-for-the-batch-report-cli-test"


def _by_hand(db_path: Path) -> dict[str, Any]:
    """The batch figures from the rows: tokens and cost of rows tagged batch=…, hardware
    periods summed; the formulas of reports/batches.py written out again. Money is stored
    in integer units of 1e-10 USD on SQLite."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT json_extract(tags, '$.batch'), tier, prompt_tokens + completion_tokens, "
            "cost_usd FROM requests WHERE state != 'open'").fetchall()
        busy_s, idle_s, busy_usd, idle_usd = db.execute(
            "SELECT sum(busy_s), sum(idle_s), sum(busy_usd), sum(idle_usd) "
            "FROM hardware_periods").fetchone()
    mine = [r for r in rows if r[0]]
    tokens = sum(r[2] for r in mine if r[1] != "api")
    usd = sum((Decimal(r[3]) for r in mine if r[1] != "api"), Decimal(0)).scaleb(-10)
    idle, busy_usd = Decimal(idle_usd).scaleb(-10), Decimal(busy_usd).scaleb(-10)
    return {
        "batches": len({r[0] for r in mine}), "requests": len(mine), "local_tokens": tokens,
        "local_cost_usd": usd, "per_million": float(usd) / tokens * 1e6,
        "utilization_added": min(1.0, float(usd) / float(busy_usd)) * busy_s / (busy_s + idle_s),
        "absorbed": usd, "absorbed_share": float(usd) / float(usd + idle),
    }


async def test_the_cli_report_shows_the_batch_figures_in_every_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", ADMIN)
    async with batch_harness(tmp_path) as h:
        batch = await start_batch(h.client, [chat_line(f"r{i}") for i in range(4)])
        assert (await wait_status(h.client, batch["id"]))["status"] == "completed"
        await h.chat("local")  # live traffic: not a batch figure
        await h.ledger.flush()
        # A known hardware period in the window: 600 s busy ($0.30), 3,000 s idle ($0.90).
        start = datetime.now(UTC) - timedelta(minutes=30)
        await h.ledger.record_hardware_period(HardwarePeriod(
            start, start + timedelta(hours=1), 600.0, 3000.0, Decimal("0.3"),
            Decimal("0.9"), None, "test"))
        endpoint = (await h.client.get("/admin/report/batches", params={"since": "1h"},
                                       headers=auth(ADMIN))).json()
    dsn = f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
    out: dict[str, str] = {}
    for fmt in ("json", "md", "csv", "html"):
        path = tmp_path / f"report.{fmt}"
        argv = ["report", "--dsn", dsn, "--since", "1h", "--format", fmt, "--output", str(path)]
        assert await asyncio.to_thread(cli_main, argv) == 0
        out[fmt] = path.read_text()
    hand = _by_hand(tmp_path / "ledger.db")
    assert hand["requests"] == 4 and hand["local_tokens"] > 0 and hand["local_cost_usd"] > 0

    figures = orjson.loads(out["json"])["batches"]
    assert (figures["batches"], figures["requests"], figures["local_tokens"]) == (
        1, 4, hand["local_tokens"])
    assert Decimal(figures["local_cost_usd"]) == hand["local_cost_usd"]
    assert Decimal(figures["idle_cost_absorbed_usd"]) == hand["absorbed"]
    assert figures["local_usd_per_million_tokens"] == pytest.approx(hand["per_million"])
    assert figures["utilization_added"] == pytest.approx(hand["utilization_added"])
    assert figures["absorbed_share"] == pytest.approx(hand["absorbed_share"])
    # The same row figures as the node's endpoint (the node wrote one more hardware period
    # as it stopped, after the endpoint answered: the period figures may differ).
    row_figures = ("batches", "requests", "local_tokens", "api_tokens", "local_cost_usd",
                   "local_usd_per_million_tokens", "idle_cost_absorbed_usd", "per_batch")
    assert {k: endpoint[k] for k in row_figures} == {k: figures[k] for k in row_figures}

    rows = list(csv.reader(io.StringIO(out["csv"].split("\n\n", 1)[1])))
    table = dict(rows[1:])
    assert rows[0] == ["batch_figure", "value"]
    assert int(table["local_tokens"]) == hand["local_tokens"]
    assert Decimal(table["local_cost_usd"]) == hand["local_cost_usd"]
    assert float(table["utilization_added"]) == pytest.approx(hand["utilization_added"])
    assert Decimal(table["idle_cost_absorbed_usd"]) == hand["absorbed"]
    utilization = f"{hand['utilization_added'] * 100:.2g}%" if hand[
        "utilization_added"] < 0.01 else f"{hand['utilization_added'] * 100:.1f}%"
    for fmt in ("md", "html"):
        text = out[fmt]
        assert "Batches" in text and batch["id"] in text, fmt
        assert f"{hand['local_tokens']:,}" in text and utilization in text, fmt
    assert json.loads(out["json"])["batches"]["per_batch"][batch["id"]]["requests"] == 4
