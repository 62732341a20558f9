"""The accountant's reservations along a fallback chain and its local cost clock, on a real
ledger (SQLite and PostgreSQL) with the real price book."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from spillgate.accountant import Accountant
from spillgate.costing.costclock import CostClock
from spillgate.costing.pricing import PriceBook
from spillgate.errors import RateLimited
from spillgate.ledger.record import RequestRecord, Usage
from spillgate.ledger.schema import hardware_periods, requests
from spillgate.ledger.store import Ledger
from spillgate.routing.router import Target
from spillgate.settings import CostSettings, LocalBackendSettings, Settings
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.telemetry.snapshot import CapacitySnapshot, EngineReading, GpuReading
from spillgate.tenancy.keys import create_key

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the fixture's loop (asyncpg)
MODELS = Path(__file__).resolve().parents[2] / "models"
MINI = Target("openai", "gpt-4o-mini", "api")
HAIKU = Target("anthropic", "claude-3-5-haiku-latest", "api")
LOCAL = Target("local-cpu", "smollm2", "local")


class Ticks:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def accountant(ledger_dsn: str) -> AsyncIterator[tuple[Accountant, Ticks]]:
    ticks = Ticks()
    clock = CostClock(lambda _watts: Decimal("0.001"), clock=ticks)
    acc = Accountant(ledger_dsn, PriceBook.load(MODELS / "pricing.yaml"), clock, {},
                     GatewayMetrics())
    await acc.open()
    yield acc, ticks
    await acc.aclose()


async def _keyed(acc: Accountant, budget: str) -> str:
    _, secret = await create_key(acc.ledger, "team", daily_budget_usd=Decimal(budget))
    client = await acc.lookup_key(secret)
    assert client is not None and client.key_id is not None
    return client.key_id


def _record(key_id: str | None, rid: str = "r1", stream: bool = False) -> RequestRecord:
    # 10,000 bytes of body bound the prompt; 1,000 output tokens at most.
    return RequestRecord(request_id=rid, key_id=key_id, route="paid", stream=stream,
                         started_at=0.0, max_output_tokens=1000, prompt_bound=10_000)


def _worst(price_in: str, price_out: str) -> Decimal:
    return (10_000 * Decimal(price_in) + 1000 * Decimal(price_out)) / 1_000_000


async def test_the_first_reservation_is_priced_at_the_dearest_model_of_the_chain(
    accountant: tuple[Accountant, Ticks],
) -> None:
    acc, _ = accountant
    record = _record(await _keyed(acc, "1"))
    await acc.reserve(record, MINI, (MINI, HAIKU))
    # haiku's bound, not mini's: every prompt token at its dearest rate (a cache write, 1.00)
    assert record.reserved_usd == _worst("1.00", "4.00")
    await acc.reserve(record, HAIKU, (MINI, HAIKU))  # the fallback needs nothing more
    assert record.reserved_usd == _worst("1.00", "4.00")


async def test_a_dearer_fallback_reserves_the_difference_or_is_skipped(
    accountant: tuple[Accountant, Ticks],
) -> None:
    acc, _ = accountant
    key = await _keyed(acc, "0.02")  # holds mini's bound (0.0021) but not haiku's (0.014)
    record = _record(key)
    await acc.reserve(record, MINI)  # a chain of one
    assert record.reserved_usd == _worst("0.15", "0.60")
    await acc.reserve(record, HAIKU)
    assert record.reserved_usd == _worst("1.00", "4.00")
    other = _record(key, "r2")
    await acc.reserve(other, MINI)
    with pytest.raises(RateLimited):  # 0.02 - 0.014 - 0.0021 left: haiku does not fit
        await acc.reserve(other, HAIKU)
    assert other.reserved_usd == _worst("0.15", "0.60")
    # settling releases what was not spent
    record.tier, record.backend, record.model = "api", "anthropic", "claude-3-5-haiku-latest"
    record.usage = Usage(prompt_tokens=1000, completion_tokens=10)
    await _finish(acc, record)
    snap = await acc.ledger.budget_snapshot(key)
    spent = (1000 * Decimal("0.80") + 10 * Decimal("4.00")) / 1_000_000
    assert snap.daily_remaining == Decimal("0.02") - spent - _worst("0.15", "0.60")


async def _finish(acc: Accountant, record: RequestRecord) -> None:
    """As RequestLife settles: the row at once, or the reservation's step awaited."""
    step = acc.finish(record)
    if step is not None:
        await step()


async def test_a_local_request_pays_from_dispatch_to_settle(
    accountant: tuple[Accountant, Ticks],
) -> None:
    acc, ticks = accountant
    record = _record(None)
    record.backend, record.model = "local-cpu", "smollm2"
    ticks.now = 1.0
    acc.dispatched(record, LOCAL)  # queued in the engine from here
    ticks.now = 3.0
    acc.served(record)  # the first byte changes nothing: it was busy all along
    ticks.now = 4.5
    record.usage = Usage(prompt_tokens=20, completion_tokens=5)
    await _finish(acc, record)
    assert record.cost_usd == Decimal("0.0035")


async def test_a_local_attempt_that_spills_leaves_the_clock(
    accountant: tuple[Accountant, Ticks],
) -> None:
    acc, ticks = accountant
    record = _record(None, stream=True)
    acc.dispatched(record, LOCAL)
    ticks.now = 2.0
    await acc.reserve(record, MINI)  # the deadline passed: on to the paid API
    ticks.now = 5.0
    assert acc.clock.in_flight() == 0
    period = acc.clock.drain_period()
    assert (period.busy_s, period.unattributed_usd) == (2.0, Decimal("0.002"))


def _snapshot(now: float) -> CapacitySnapshot:
    gpus = tuple(GpuReading(i, 0.9, 1, 2, 500.0 + 100 * i, 60.0, now) for i in range(4))
    engine = EngineReading("gpu", "u", True, now, running=5.0, waiting=0.0)
    return CapacitySnapshot(gpus=gpus, engines={"gpu": (engine,)}, inflight={"gpu": 3},
                            nvml_available=True, taken_at=now)


@pytest.mark.parametrize(("engine", "watts"), [("vllm", 1300.0), ("llamacpp", None)])
async def test_telemetry_prices_gpu_nodes_at_measured_power_and_sees_other_clients(
    accountant: tuple[Accountant, Ticks], engine: str, watts: float | None,
) -> None:
    acc, ticks = accountant
    settings = Settings(local=[LocalBackendSettings(name="gpu", model="m", engine=engine)],
                        cost=CostSettings(units=2))  # 2 of the 4 GPUs NVML sees
    acc.watch(lambda: _snapshot(ticks.now), settings, now=ticks)
    assert acc.clock.power() == watts  # mean 650 W per GPU x 2 units; CPU nodes: nominal
    assert acc.clock.external() == 2  # 5 running, 3 of them ours


async def test_replicas_on_one_host_share_a_ledger_under_their_own_node_ids(
    tmp_path: Path,
) -> None:
    dsn = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    book = PriceBook.load(MODELS / "pricing.yaml")

    def replica(name: str) -> Accountant:
        clock = CostClock(lambda _watts: Decimal("0.001"), clock=Ticks())
        return Accountant(dsn, book, clock, {}, GatewayMetrics(), node_id=name)

    a, b = replica("replica-a"), replica("replica-b")
    await a.open()
    record = _record(None, rid="a-1")
    record.tier, record.backend = "local", "local-cpu"
    record.started_at = time.time()  # in flight now, well within recovery's grace
    a.open_row(record)  # replica a is serving it
    await a.ledger.flush()
    await b.open()  # b's start-up recovery must not close a's request in flight
    async with b.ledger.reading() as conn:
        assert (await conn.execute(select(requests.c.state))).scalar() == "open"
    await b.aclose()
    await _finish(a, record)
    await a.aclose()
    reader = await Ledger.open(dsn, node_id="reader")
    async with reader.reading() as conn:
        rows = (await conn.execute(select(requests.c.node_id, requests.c.state))).all()
        nodes = set((await conn.execute(select(hardware_periods.c.node_id))).scalars())
    await reader.aclose()
    assert [tuple(r) for r in rows] == [("replica-a", "settled")]
    assert nodes == {"replica-a", "replica-b"}  # each one's hardware cost, apart
