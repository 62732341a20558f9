"""Two replicas, one truth: two `spillgate serve` processes on one PostgreSQL ledger in front
of one (fake) provider. A key's RPM limit and its paid budget hold in total, not per
replica."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from spillgate.ledger.store import Ledger
from tests.conftest import node_config, run_node
from tests.pg import fresh_database
from tests.support import Proc, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
ADMIN = "admin-key-for-replica-tests-0123456789"
RPM = 60
BUDGET = Decimal("0.05")
REQUESTS = 200
# USD per 1M tokens for openai/gpt-4o-mini (models/pricing.yaml), for an independent recount.
MINI = (Decimal("0.15"), Decimal("0.60"))


@contextlib.contextmanager
def _replicas(dsn: str, local: Proc, paid: Proc, tmp: Path) -> Iterator[tuple[Proc, Proc]]:
    with contextlib.ExitStack() as stack:
        nodes = []
        for name in ("a", "b"):
            folder = tmp / name
            folder.mkdir()
            config = node_config(local.base_url + "/v1", paid.base_url, folder)
            config["ledger"] = {"dsn": dsn}
            config["routes"] = [{"name": "paid", "policy": "api",
                                 "paid": "openai/gpt-4o-mini"}]
            node = stack.enter_context(
                run_node(config, folder, env={"SPILLGATE_ADMIN_KEY": ADMIN}))
            wait_http(node.base_url.removesuffix("/v1") + "/readyz")
            nodes.append(node)
        yield nodes[0], nodes[1]


def _fire(nodes: tuple[Proc, Proc], key: str) -> list[httpx.Response]:
    body = {"model": "paid", "max_tokens": 16000,
            "messages": [{"role": "user", "content": "Name a colour."}]}

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(
                timeout=120, limits=httpx.Limits(max_connections=REQUESTS)) as client:
            return list(await asyncio.gather(*(
                client.post(nodes[i % 2].base_url + "/chat/completions", json=body,
                            headers={"authorization": f"Bearer {key}"})
                for i in range(REQUESTS))))

    return asyncio.run(fire())


def test_rpm_and_budget_hold_in_total_across_two_replicas(
    pg_dsn: str, fakes: tuple[Proc, Proc], tmp_path: Path,
) -> None:
    local, paid = fakes
    # Slow calls keep many reservations outstanding at once, so the budget binds too.
    httpx.post(paid.base_url + "/_fake/faults", json={"latency_ms": 1000}).raise_for_status()
    dsn = asyncio.run(fresh_database(pg_dsn))
    since = datetime.now(UTC) - timedelta(minutes=1)
    with _replicas(dsn, local, paid, tmp_path) as nodes:
        made = httpx.post(nodes[0].base_url.removesuffix("/v1") + "/admin/keys",
                          json={"name": "shared", "rpm": RPM,
                                "daily_budget_usd": str(BUDGET)},
                          headers={"authorization": f"Bearer {ADMIN}"})
        assert made.status_code == 201, made.text
        replies = _fire(nodes, made.json()["secret"])
    # Both replicas stopped (SIGTERM): their write-behind ledger rows are flushed.

    codes = [r.json()["error"]["code"] if r.status_code == 429 else r.status_code
             for r in replies]
    served = [r for r in replies if r.status_code == 200]
    assert set(codes) <= {200, "rate_limit_exceeded", "budget_exhausted"}, set(codes)
    # The rate window admitted exactly RPM of the 200 (two per-replica windows: 2 x RPM);
    # those it admitted were served or refused by the budget, the rest were rate limited.
    assert codes.count("rate_limit_exceeded") == REQUESTS - RPM
    assert len(served) + codes.count("budget_exhausted") == RPM
    assert all(0 < float(r.headers["retry-after"]) <= 60
               for r in replies if r.status_code == 429)
    # Each call reserves ~$0.0096 (16000 output tokens at $0.60/1M), so $0.05 holds five at
    # a time: the budget turned some of the admitted calls away.
    assert 0 < len(served) < RPM
    calls = [c for c in httpx.get(paid.base_url + "/_fake/requests").json()
             if c["path"] == "/v1/chat/completions"]
    assert len(calls) == len(served)  # nothing reached the provider unreserved

    async def ledger_rows() -> list[dict[str, Any]]:
        ledger = await Ledger.open(dsn, node_id="reader")
        try:
            return await ledger.rows_between(since, datetime.now(UTC) + timedelta(minutes=1))
        finally:
            await ledger.aclose()

    rows = [r for r in asyncio.run(ledger_rows()) if r["key_id"] is not None]
    # A row for each served request, whichever replica took it. Refusals before routing (the
    # rate window; a budget this replica saw exhausted moments ago) open no row, as on one
    # replica; a reservation refused by the database is a 429 row.
    assert sorted(r["status"] for r in rows if r["status"] == 200) == [200] * len(served)
    assert {r["status"] for r in rows} <= {200, 429} and len(rows) <= RPM
    spent = sum((Decimal(str(r["cost_usd"])) for r in rows), Decimal(0))
    billed = sum((Decimal(r.json()["usage"]["prompt_tokens"]) * MINI[0]
                  + Decimal(r.json()["usage"]["completion_tokens"]) * MINI[1]
                  for r in served), Decimal(0)) / 1_000_000
    assert spent == billed  # the ledger's spend is what the provider billed
    assert spent <= BUDGET
