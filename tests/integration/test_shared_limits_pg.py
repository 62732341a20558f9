"""RPM/TPM windows shared by two replicas (two Ledgers) on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from spillgate.ledger.migrations import open_engine
from spillgate.ledger.schema import rate_events
from spillgate.ledger.store import Ledger, utc_now
from spillgate.tenancy.limits import RateLimiter
from spillgate.tenancy.shared_limits import SharedRateLimiter
from tests.pg import fresh_database
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def replicas(pg_dsn: str) -> AsyncIterator[tuple[Ledger, Ledger]]:
    dsn = await fresh_database(pg_dsn)
    a, b = await asyncio.gather(Ledger.open(dsn, node_id="replica-a"),
                                Ledger.open(dsn, node_id="replica-b"))
    yield a, b
    await asyncio.gather(a.aclose(), b.aclose())


async def _rows(ledger: Ledger, key_id: str) -> int:
    async with ledger.reading() as conn:
        e = rate_events.c
        count: int = (await conn.execute(
            select(func.count()).select_from(rate_events).where(e.key_id == key_id)
        )).scalar_one()
        return count


@session_loop
async def test_two_replicas_admit_a_keys_rpm_in_total(replicas: tuple[Ledger, Ledger]) -> None:
    a, b = replicas
    limiters = (SharedRateLimiter(a), SharedRateLimiter(b))
    waits = await asyncio.gather(*(limiters[i % 2].check("k", 20, None, 10)
                                   for i in range(100)))
    admitted = [w for w in waits if w is None]
    refused = [w for w in waits if w is not None]
    assert len(admitted) == 20  # per-replica windows would have admitted 40
    assert all(0 < w <= 60 for w in refused)
    assert await _rows(a, "k") == 20  # one row per admitted request, whichever replica
    assert await limiters[1].check("other", 20, None, 10) is None  # each key its own window


@session_loop
async def test_tokens_per_minute_hold_across_replicas(replicas: tuple[Ledger, Ledger]) -> None:
    a, b = replicas
    limiters = (SharedRateLimiter(a), SharedRateLimiter(b))
    waits = await asyncio.gather(*(limiters[i % 2].check("t", None, 1000, 300)
                                   for i in range(10)))
    assert sum(w is None for w in waits) == 1000 // 300  # 900 fit, a fourth would be 1200
    # A request larger than the whole allowance passes once on an idle window, as in memory.
    assert await limiters[0].check("big", None, 100, 500) is None
    assert await limiters[1].check("big", None, 100, 1) is not None


@session_loop
async def test_the_window_slides_on_the_databases_clock(replicas: tuple[Ledger, Ledger]) -> None:
    a, b = replicas
    limiter_a, limiter_b = SharedRateLimiter(a), SharedRateLimiter(b)
    assert [await limiter_a.check("s", 2, None, 1) for _ in range(2)] == [None, None]
    assert await limiter_b.check("s", 2, None, 1) is not None
    async with a.transaction() as conn:  # age the first request past the 60 s window
        first = (await conn.execute(select(func.min(rate_events.c.at)))).scalar_one()
        await conn.execute(update(rate_events).where(rate_events.c.at == first)
                           .values(at=first - 61))
    assert await limiter_b.check("s", 2, None, 1) is None  # one slot freed, taken by b
    assert await limiter_a.check("s", 2, None, 1) is not None
    assert await _rows(a, "s") == 2  # the expired row was deleted


@session_loop
async def test_an_unreachable_database_limits_in_this_replica_only() -> None:
    dead = Ledger(open_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"),
                  node_id="x", clock=utc_now, grace_s=60.0)
    limiter = SharedRateLimiter(dead)
    try:
        assert await limiter.check("d", 1, None, 1) is None  # served, not a 500
        assert await limiter.check("d", 1, None, 1) is not None  # the local window holds
    finally:
        await dead.engine.dispose()


LIMIT = st.one_of(st.none(), st.integers(0, 6))
CHECKS = st.lists(st.tuples(st.sampled_from(["p", "q"]), st.integers(0, 700)),
                  min_size=1, max_size=16)


def test_the_shared_window_decides_as_the_in_process_one(pg_dsn: str) -> None:
    """Within one minute, any sequence of checks is admitted or refused the same by both
    limiters (the database rows rebuild the same window), with about the same Retry-After."""
    dsn = asyncio.run(fresh_database(pg_dsn))

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rpm=LIMIT, tpm=st.one_of(st.none(), st.integers(0, 1500)), checks=CHECKS)
    def agree(rpm: int | None, tpm: int | None, checks: list[tuple[str, int]]) -> None:
        async def both() -> None:
            ledger = await Ledger.open(dsn, node_id="prop")
            try:
                shared, local = SharedRateLimiter(ledger), RateLimiter()
                run = uuid.uuid4().hex  # keys of this example only
                for key, tokens in checks:
                    want = local.check(run + key, rpm, tpm, tokens, time.monotonic())
                    got = await shared.check(run + key, rpm, tpm, tokens)
                    assert (got is None) == (want is None), (key, tokens)
                    if got is not None and want is not None:
                        assert abs(got - want) < 5.0
            finally:
                await ledger.aclose()

        asyncio.run(both())

    agree()
