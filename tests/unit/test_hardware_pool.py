"""Two gateway processes in front of one engine, on one ledger (SQLite and PostgreSQL), book
the node's hardware once (costing/pool.py). Each process has its own cost clock; the engine
shows each the other's sequences, as its /metrics would. The figures are recomputed from the
raw rows against a hand model: the node costs RATE per second of wall time, whoever serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from spillgate.accountant import Accountant
from spillgate.costing.costclock import CostClock
from spillgate.costing.pricing import PriceBook
from spillgate.ledger.record import RequestRecord, Usage
from spillgate.ledger.schema import hardware_periods, requests
from spillgate.routing.router import Target
from spillgate.telemetry.metrics import GatewayMetrics

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the fixture's loop (asyncpg)
MODELS = Path(__file__).resolve().parents[2] / "models"
LOCAL = Target("local-cpu", "smollm2", "local")
RATE = Decimal("0.001")  # USD per second of the node
WALL0 = 1_800_000_000.0


class Time:
    """Monotonic and wall clock of the test, shared by both processes. `at` moves it and
    ticks the processes' clocks, as their once-a-second accrual does: a clock reads the
    engine's other sequences at its ticks."""

    now = 0.0

    def __init__(self) -> None:
        self.clocks: list[CostClock] = []
        self.metrics: list[GatewayMetrics] = []  # each process's Prometheus counters
        self.stopped: list[Accountant] = []

    async def stop(self, acc: Accountant) -> None:
        """The process stops: its last period is booked, and the lease released."""
        await acc.aclose()
        self.stopped.append(acc)

    def at(self, now: float) -> None:
        self.now = now
        for clock in self.clocks:
            clock.tick()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + self.now


@pytest.fixture
async def pair(ledger_dsn: str) -> AsyncIterator[tuple[Accountant, Accountant, Time]]:
    """Processes a and b of pool "node-1" on one ledger, a's clock seeing b's requests as
    the engine's other sequences and the other way round."""
    time = Time()
    clocks = [CostClock(lambda _watts: RATE, clock=time.monotonic, wall=time.wall)
              for _ in range(2)]
    clocks[0].external = clocks[1].in_flight
    clocks[1].external = clocks[0].in_flight
    time.clocks = clocks
    time.metrics = [GatewayMetrics(), GatewayMetrics()]
    accs = [Accountant(ledger_dsn, PriceBook.load(MODELS / "pricing.yaml"), clock, {},
                       metrics, node_id=name, pool="node-1")
            for clock, metrics, name in zip(clocks, time.metrics, "ab", strict=True)]
    for acc in accs:
        await acc.open()
    yield accs[0], accs[1], time
    for acc in accs:
        if acc in time.stopped:  # read after it stopped: the reads' connections
            await acc.ledger.engine.dispose()
        else:
            await acc.aclose()


def _local(rid: str) -> RequestRecord:
    record = RequestRecord(request_id=rid, key_id=None, route="local", stream=False,
                           started_at=0.0, max_output_tokens=100, prompt_bound=100)
    record.tier, record.backend, record.model = "local", "local-cpu", "smollm2"
    return record


async def _serve(acc: Accountant, record: RequestRecord) -> None:
    record.usage = Usage(prompt_tokens=10, completion_tokens=10)
    step = acc.finish(record)
    if step is not None:
        await step()


async def _sums(acc: Accountant) -> dict[str, Decimal]:
    """The raw rows of both processes, summed in SQL (not through the report code)."""
    await acc.ledger.flush()
    h, r = hardware_periods.c, requests.c
    async with acc.ledger.reading() as conn:
        hw = (await conn.execute(select(
            func.sum(h.busy_s), func.sum(h.idle_s), func.sum(h.busy_usd),
            func.sum(h.idle_usd), func.sum(h.unattributed_usd)))).one()
        carried = (await conn.execute(select(func.sum(r.cost_usd)).where(
            r.cost_kind == "local"))).scalar_one()
    busy_s, idle_s, busy, idle, unattributed = hw
    return {"seconds": Decimal(repr(busy_s + idle_s)), "booked": Decimal(busy) + Decimal(idle),
            "idle": Decimal(idle), "unattributed": Decimal(unattributed),
            "requests": Decimal(carried or 0)}


async def test_two_processes_book_the_node_once_and_their_requests_carry_the_busy_time(
    pair: tuple[Accountant, Accountant, Time],
) -> None:
    a, b, time = pair
    first, second = _local("b-1"), _local("a-1")
    time.at(2.0)
    b.dispatched(first, LOCAL)  # b's request alone on the engine for 4 s
    time.at(6.0)
    a.dispatched(second, LOCAL)  # then both for 2 s (an even split: same token counts)
    time.at(8.0)
    await _serve(b, first)
    time.at(9.0)
    await _serve(a, second)  # a's alone for 1 s, then 1 s idle
    time.at(10.0)
    await time.stop(a)  # a books its period first: it holds the lease, then releases it
    await time.stop(b)
    sums = await _sums(a)
    # hand model: 10 s of the node at RATE; busy 2..9 = 7 s, b's 4 + 1 and a's 1 + 1.
    assert sums["seconds"] == 10
    assert sums["booked"] == 10 * RATE
    assert sums["idle"] == 3 * RATE
    assert sums["requests"] == 7 * RATE
    assert sums["unattributed"] == 0  # no other client used the engine
    assert sums["requests"] + sums["unattributed"] + sums["idle"] == sums["booked"]
    # Prometheus summed over both processes (as over a Deployment's pods) shows one node.
    exported = sum(m.registry.get_sample_value("spillgate_local_cost_usd_total", {"kind": k})
                   or 0.0 for m in time.metrics for k in ("busy", "idle"))
    assert exported == pytest.approx(float(10 * RATE))


async def test_the_second_process_takes_over_the_booking_when_the_first_stops(
    pair: tuple[Accountant, Accountant, Time],
) -> None:
    a, b, time = pair
    time.at(10.0)
    await time.stop(a)  # a books 0..10 and releases
    record = _local("b-1")
    time.at(12.0)
    b.dispatched(record, LOCAL)
    time.at(15.0)
    await _serve(b, record)
    time.at(20.0)
    await time.stop(b)  # b's period 0..20: the part after a's booking is its to book whole
    sums = await _sums(b)
    assert sums["seconds"] == 20
    assert sums["booked"] == 20 * RATE
    assert sums["requests"] == 3 * RATE
    assert sums["requests"] + sums["unattributed"] + sums["idle"] == sums["booked"]
