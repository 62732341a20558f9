"""Migration 7 on a ledger made before it: request rows gain the cache columns (zero for old
rows), keys gain a cache namespace (none for old keys), and both are written from then on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import insert, select, text

from spillgate.ledger import rollup, schema
from spillgate.ledger.migrations import MIGRATIONS, migrate, open_engine
from spillgate.ledger.record import RequestRecord
from spillgate.ledger.store import Ledger, RequestOutcome
from spillgate.tenancy.keys import create_key, list_keys

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
ADDED = {"requests": ("cache", "saved_tokens", "avoided_usd"), "api_keys": ("cache_namespace",)}


async def test_migration_7_adds_the_cache_columns_to_an_older_ledger(ledger_dsn: str) -> None:
    engine = open_engine(ledger_dsn)
    try:
        async with engine.begin() as conn:  # the layout before migration 7
            await conn.run_sync(schema.metadata.create_all)
            await conn.run_sync(rollup.rollup_metadata.create_all)  # migration 3's table
            for table, columns in ADDED.items():
                for column in columns:
                    await conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            for version, _ in MIGRATIONS:
                if version < 7:
                    await conn.execute(insert(schema.schema_version).values(
                        version=version, applied_at=T0))
            await conn.execute(text(
                "INSERT INTO requests (request_id, node_id, started_at, tags, route, reason, "
                "backend, tier, model, stream, prompt_tokens, cached_tokens, "
                "completion_tokens, sensitivity, cost_usd, cost_kind, counterfactual_usd, "
                "usage_source, reserved_usd, state) VALUES ('old', 'n', :t, '{}', 'r', '', "
                "'b', 'api', 'm', false, 1, 0, 1, '', 0, 'api', 0, 'measured', 0, 'settled')"),
                {"t": T0.replace(tzinfo=None)})
        assert 7 in await migrate(engine)
        assert await migrate(engine) == []  # idempotent
    finally:
        await engine.dispose()
    ledger = await Ledger.open(ledger_dsn)
    try:
        hit = RequestRecord("new", None, "r", False, T0.timestamp(), cache="semantic",
                            avoided_usd=Decimal("0.0125"), saved_tokens=42)
        ledger.finish(RequestOutcome.from_record(hit))
        await ledger.flush()
        async with ledger.reading() as conn:
            r = schema.requests.c
            rows = {row.request_id: row for row in await conn.execute(
                select(r.request_id, r.cache, r.saved_tokens, r.avoided_usd, r.tier))}
        assert (rows["old"].cache, rows["old"].saved_tokens, rows["old"].avoided_usd) == (
            "", 0, Decimal(0))
        assert (rows["new"].cache, rows["new"].saved_tokens, rows["new"].avoided_usd,
                rows["new"].tier) == ("semantic", 42, Decimal("0.0125"), "cache")
        await create_key(ledger, "shared", cache_namespace="team-a")
        await create_key(ledger, "own")
        spaces = {k.name: k.cache_namespace for k in await list_keys(ledger)}
        assert spaces == {"shared": "team-a", "own": None}
    finally:
        await ledger.aclose()


async def test_savings_are_summed_per_key_tag_and_route_on_either_database(
        ledger_dsn: str) -> None:
    from datetime import timedelta

    from spillgate.reports.cache_savings import read_savings

    ledger = await Ledger.open(ledger_dsn)
    try:
        hits = [("k1", "faq", {"team": "a"}, "0.01", 10), ("k1", "faq", {"team": "a"}, "0.02", 20),
                ("k2", "faq", {"team": "b", "app": "x"}, "0.04", 40),
                ("k2", "chat", {}, "0.08", 80)]
        for i, (key, route, tags, usd, tokens) in enumerate(hits):
            ledger.finish(RequestOutcome.from_record(RequestRecord(
                f"h{i}", key, route, False, T0.timestamp() + i, tags=tags, cache="exact",
                avoided_usd=Decimal(usd), saved_tokens=tokens)))
        miss = RequestRecord("m", "k1", "faq", False, T0.timestamp(), cost_usd=Decimal(1))
        ledger.finish(RequestOutcome.from_record(miss))
        await ledger.flush()
        async with ledger.reading() as conn:
            saved = await read_savings(conn, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    finally:
        await ledger.aclose()
    assert saved["totals"] == {"hits": 4, "saved_tokens": 150, "avoided_usd": "0.15"}
    assert saved["by_key"]["k1"] == {"hits": 2, "saved_tokens": 30, "avoided_usd": "0.03"}
    assert saved["by_route"]["chat"]["avoided_usd"] == "0.08"
    assert {k: v["hits"] for k, v in saved["by_tag"].items()} == {
        "team=a": 2, "team=b": 1, "app=x": 1}


async def test_an_admin_sets_a_cache_namespace_that_authenticated_requests_carry(
        ledger_dsn: str) -> None:
    import httpx
    from fastapi import FastAPI

    from spillgate.api.admin_keys import admin_keys_router
    from spillgate.tenancy.keys import KeyStore
    from spillgate.web import install_error_handlers

    ledger = await Ledger.open(ledger_dsn)
    try:
        app = FastAPI()
        install_error_handlers(app)
        keys = KeyStore(ledger)
        app.state.keys = keys
        app.include_router(admin_keys_router())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            made = await client.post("/admin/keys", json={"name": "a", "cache_namespace": "t"})
            plain = await client.post("/admin/keys", json={"name": "b"})
            listed = (await client.get("/admin/keys")).json()["data"]
        assert made.json()["key"]["cache_namespace"] == "t"
        assert {k["name"]: k["cache_namespace"] for k in listed} == {"a": "t", "b": None}
        info = await keys.authenticate(made.json()["secret"])
        assert info is not None and info.cache_namespace == "t"
        other = await keys.authenticate(plain.json()["secret"])
        assert other is not None and other.cache_namespace is None
    finally:
        await ledger.aclose()
