"""The ledger's request rows, migrations, hardware periods and keys, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from spillgate.api.admin_keys import admin_keys_router
from spillgate.ledger.migrations import MIGRATIONS, current_version, migrate
from spillgate.ledger.schema import api_keys
from spillgate.ledger.store import Ledger, RequestOutcome, RequestStart
from spillgate.tenancy.keys import KeyStore, create_key, list_keys
from spillgate.web import install_error_handlers

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def dsn(ledger_dsn: str) -> str:
    return ledger_dsn


@pytest.fixture
async def ledger(dsn: str) -> AsyncIterator[Ledger]:
    led = await Ledger.open(dsn, node_id="node-a")
    yield led
    await led.aclose()


def start(rid: str, **fields: object) -> RequestStart:
    base: dict[str, object] = {"started_at": T0, "key_id": "key-x", "route": "auto",
                               "reason": "overflow_ttft", "backend": "openai", "tier": "api",
                               "model": "gpt-4o-mini", "stream": True,
                               "tags": {"project": "a", "task": "b"}, "sensitivity": ""}
    base.update(fields)
    return RequestStart(rid, **base)  # type: ignore[arg-type]


def outcome(begun: RequestStart, **fields: object) -> RequestOutcome:
    base: dict[str, object] = {
        "finished_at": T0 + timedelta(seconds=2), "status": 200, "prompt_tokens": 1234,
        "cached_tokens": 200, "completion_tokens": 321, "ttft_ms": 87.5,
        "latency_ms": 1999.25, "cost_usd": Decimal("0.0001234567"),
        "counterfactual_usd": Decimal("0.0123456789")}
    base.update(fields)
    return RequestOutcome(begun, **base)  # type: ignore[arg-type]


async def all_rows(ledger: Ledger) -> dict[str, dict[str, object]]:
    rows = await ledger.rows_between(*EVER, include_open=True)
    return {str(r["request_id"]): r for r in rows}


async def test_begin_then_finish_round_trips_exact_values(ledger: Ledger) -> None:
    begun = start("r-1", sensitivity="email,iban")
    ledger.begin(begun)
    await ledger.flush()
    row = (await all_rows(ledger))["r-1"]
    assert (row["state"], row["finished_at"], row["status"]) == ("open", None, None)
    assert row["node_id"] == "node-a" and row["sensitivity"] == "email,iban"
    assert await ledger.rows_between(*EVER) == []  # open rows are not in reports

    ledger.finish(outcome(begun))
    await ledger.flush()
    [row] = await ledger.rows_between(*EVER)
    assert row["state"] == "settled" and row["cost_kind"] == "api"
    assert row["cost_usd"] == Decimal("0.0001234567")
    assert row["counterfactual_usd"] == Decimal("0.0123456789")
    assert isinstance(row["cost_usd"], Decimal)
    assert row["started_at"] == T0 and row["started_at"].tzinfo is not None  # type: ignore[attr-defined]
    assert row["finished_at"] == T0 + timedelta(seconds=2)
    assert row["tags"] == {"project": "a", "task": "b"}
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (
        1234, 200, 321)
    assert (row["ttft_ms"], row["latency_ms"], row["stream"]) == (87.5, 1999.25, True)


async def test_open_row_is_committed_by_the_batcher_without_flush(ledger: Ledger) -> None:
    ledger.begin(start("r-bg"))
    for _ in range(200):  # the batcher commits within ~20 ms; allow a slow machine 2 s
        if "r-bg" in await all_rows(ledger):
            break
        await asyncio.sleep(0.01)
    assert (await all_rows(ledger))["r-bg"]["state"] == "open"


async def test_finish_in_the_same_batch_or_without_begin_is_kept(ledger: Ledger) -> None:
    both, lone = start("r-both"), start("r-lone", tier="local", backend="local-cpu")
    ledger.begin(both)
    ledger.finish(outcome(both))
    ledger.finish(outcome(lone, cost_usd=Decimal("0.5")))
    await ledger.flush()
    rows = await all_rows(ledger)
    assert rows["r-both"]["state"] == rows["r-lone"]["state"] == "settled"
    assert rows["r-lone"]["cost_kind"] == "local"
    assert rows["r-lone"]["cost_usd"] == Decimal("0.5")


async def test_failed_request_with_nothing_consumed_is_voided(ledger: Ledger) -> None:
    failed = start("r-fail")
    ledger.begin(failed)
    ledger.finish(outcome(failed, status=502, prompt_tokens=0, cached_tokens=0,
                          completion_tokens=0, cost_usd=Decimal(0)))
    await ledger.flush()
    assert (await all_rows(ledger))["r-fail"]["state"] == "voided"


async def test_many_rows_in_one_burst_all_land(ledger: Ledger) -> None:
    for i in range(1000):
        begun = start(f"burst-{i}")
        ledger.begin(begun)
        if i % 2:
            ledger.finish(outcome(begun))
    await ledger.flush()
    rows = await all_rows(ledger)
    assert len(rows) == 1000
    assert sum(r["state"] == "settled" for r in rows.values()) == 500


async def test_rows_between_is_half_open_and_ordered(ledger: Ledger) -> None:
    for i in range(3):
        begun = start(f"t-{i}", started_at=T0 + timedelta(hours=i))
        ledger.finish(outcome(begun))
    await ledger.flush()
    rows = await ledger.rows_between(T0, T0 + timedelta(hours=2))
    assert [r["request_id"] for r in rows] == ["t-0", "t-1"]


async def test_migrations_are_idempotent(dsn: str) -> None:
    first = await Ledger.open(dsn)
    second = await Ledger.open(dsn)  # a restart, or a second replica
    try:
        assert await migrate(first.engine) == []
        assert await current_version(second.engine) == MIGRATIONS[-1][0]
    finally:
        await first.aclose()
        await second.aclose()


async def test_hardware_periods_round_trip(ledger: Ledger) -> None:
    from spillgate.costing.costclock import HardwarePeriod

    period = HardwarePeriod(T0, T0 + timedelta(seconds=10), 6.5, 3.5, Decimal("0.0012345678"),
                            Decimal("0.0006"), 312.5, "h100-owned")
    await ledger.record_hardware_period(period)
    [row] = await ledger.hardware_between(T0, T0 + timedelta(minutes=1))
    assert (row["busy_usd"], row["idle_usd"]) == (Decimal("0.0012345678"), Decimal("0.0006"))
    assert (row["busy_s"], row["idle_s"], row["power_watts"]) == (6.5, 3.5, 312.5)
    assert row["ended_at"] == T0 + timedelta(seconds=10) and row["node_id"] == "node-a"
    assert await ledger.hardware_between(T0 + timedelta(seconds=1), T0 + timedelta(hours=1)) == []


async def test_keys_are_stored_hashed_and_authenticate_until_revoked(ledger: Ledger) -> None:
    keys = KeyStore(ledger)
    info, secret = await create_key(ledger, "team a", daily_budget_usd=Decimal("2.5"),
                                    rpm=60, local_only=True, tags={"team": "a"})
    assert secret.startswith("sg-") and len(secret) == 43
    async with ledger.reading() as conn:
        stored = (await conn.execute(select(api_keys))).one()._mapping
    assert secret not in {str(v) for v in stored.values()}
    found = await keys.authenticate(secret)
    assert found is not None and found.key_id == info.key_id and found.local_only
    assert found.daily_budget_usd == Decimal("2.5") and found.tags == {"team": "a"}
    assert await keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert await keys.authenticate("sk-not-ours") is None

    assert await keys.revoke(info.key_id)
    assert not await keys.revoke(info.key_id)
    assert await keys.authenticate(secret) is None
    assert await list_keys(ledger) == []
    assert [k.key_id for k in await list_keys(ledger, include_revoked=True)] == [info.key_id]


async def test_admin_keys_api(ledger: Ledger) -> None:
    app = FastAPI()
    install_error_handlers(app)
    keys = KeyStore(ledger)
    app.state.keys = keys
    app.include_router(admin_keys_router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        made = await client.post("/admin/keys", json={"name": "ci", "monthly_budget_usd": "10.25"})
        assert made.status_code == 201
        key = made.json()["key"]
        assert key["monthly_budget_usd"] == "10.25" and key["daily_budget_usd"] is None
        assert (await keys.authenticate(made.json()["secret"])) is not None
        listed = (await client.get("/admin/keys")).json()["data"]
        assert [k["key_id"] for k in listed] == [key["key_id"]]
        assert "secret" not in listed[0]
        gone = await client.delete(f"/admin/keys/{key['key_id']}")
        assert gone.json() == {"key_id": key["key_id"], "revoked": True}
        # Revoked through the route, the store's cached answer is gone at once.
        assert (await keys.authenticate(made.json()["secret"])) is None
        again = await client.delete(f"/admin/keys/{key['key_id']}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "key_not_found"
        refused = await client.post("/admin/keys", json={"name": "x", "rpm": -1})
        assert refused.status_code == 400 and "rpm" in refused.json()["error"]["message"]


async def test_migration_2_adds_the_power_columns_to_a_version_1_database(dsn: str) -> None:
    """A ledger made before migration 2 (hardware_periods without measured_s, external_s,
    unattributed_usd) keeps its rows and gains the columns, zero for the old rows."""
    from sqlalchemy import column, insert, inspect, table, text

    from spillgate.costing.costclock import HardwarePeriod
    from spillgate.ledger import schema
    from spillgate.ledger.migrations import MIGRATIONS, open_engine

    engine = open_engine(dsn)
    try:
        async with engine.begin() as conn:  # the version-1 layout
            await conn.run_sync(schema.metadata.create_all)
            for name in ("measured_s", "external_s", "unattributed_usd"):
                await conn.execute(text(f"ALTER TABLE hardware_periods DROP COLUMN {name}"))
            await conn.execute(text("DROP TABLE rate_events"))  # came with migration 4
            await conn.execute(insert(schema.schema_version).values(version=1, applied_at=T0))
            h = schema.hardware_periods.c
            v1 = table("hardware_periods", *(column(c.name, c.type) for c in (
                h.node_id, h.started_at, h.ended_at, h.busy_s, h.idle_s, h.busy_usd, h.idle_usd,
                h.profile)))  # a plain table clause: no defaults for the new columns
            await conn.execute(insert(v1).values(
                node_id="n", started_at=T0, ended_at=T0 + timedelta(seconds=10), busy_s=1.0,
                idle_s=9.0, busy_usd=Decimal("0.001"), idle_usd=Decimal("0.009"),
                profile="cpu-node"))
        # 3: the report rollup (backfilled); 4: the shared rate windows; every later step
        # too (each adds what is missing: test_migration_6 and its siblings check theirs)
        assert await migrate(engine) == [v for v, _ in MIGRATIONS if v > 1]
        async with engine.connect() as conn:
            assert await conn.run_sync(lambda c: inspect(c).has_table("rate_events"))
    finally:
        await engine.dispose()
    ledger = await Ledger.open(dsn)
    try:
        await ledger.record_hardware_period(HardwarePeriod(
            T0 + timedelta(seconds=10), T0 + timedelta(seconds=20), 10.0, 0.0,
            Decimal("0.01"), Decimal(0), 65.0, "cpu-node", measured_s=4.0, external_s=2.5,
            unattributed_usd=Decimal("0.0025")))
        first, second = await ledger.hardware_between(T0, T0 + timedelta(minutes=1))
        assert (first["measured_s"], first["external_s"], first["unattributed_usd"]) == (0, 0, 0)
        assert first["busy_usd"] == Decimal("0.001")
        assert (second["measured_s"], second["external_s"], second["unattributed_usd"]) == (
            4.0, 2.5, Decimal("0.0025"))
    finally:
        await ledger.aclose()


async def test_migration_6_adds_the_cascade_arm_and_feedback_columns(dsn: str) -> None:
    """A ledger made before migration 6 keeps its rows and gains arm, draft_usd, confidence,
    feedback and feedback_at: "" and 0 for the old rows, nulls for the rest."""
    from sqlalchemy import delete, text

    from spillgate.ledger import schema
    from spillgate.ledger.migrations import open_engine

    new = ("arm", "draft_usd", "confidence", "feedback", "feedback_at")
    engine = open_engine(dsn)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            for name in new:
                await conn.execute(text(f"ALTER TABLE requests DROP COLUMN {name}"))
            await conn.execute(text(
                "INSERT INTO requests (request_id, node_id, started_at, tags, route, reason, "
                "backend, tier, model, stream, prompt_tokens, cached_tokens, "
                "completion_tokens, sensitivity, cost_usd, cost_kind, counterfactual_usd, "
                "usage_source, reserved_usd, state) VALUES ('old', 'n', :t, '{}', 'auto', "
                "'local_ok', 'b', 'local', 'm', false, 1, 0, 1, '', 0, 'local', 0, "
                "'measured', 0, 'settled')"), {"t": T0.replace(tzinfo=None)})
            await conn.execute(delete(schema.schema_version).where(
                schema.schema_version.c.version == 6))
        assert await migrate(engine) == [6]
    finally:
        await engine.dispose()
    ledger = await Ledger.open(dsn)
    try:
        row = (await all_rows(ledger))["old"]
        assert (row["arm"], row["draft_usd"], row["confidence"], row["feedback"],
                row["feedback_at"]) == ("", Decimal(0), None, None, None)
    finally:
        await ledger.aclose()
