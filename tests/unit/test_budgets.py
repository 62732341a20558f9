"""Paid budgets: atomic reservations under concurrency, settle, rollover, recovery, limits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from spillgate.ledger.schema import budget_counters, budget_reservations
from spillgate.ledger.store import Ledger, RequestStart
from spillgate.tenancy.budgets import prompt_bound, worst_case_cost
from spillgate.tenancy.keys import KeyInfo, create_key
from spillgate.tenancy.limits import RateLimiter
from tests.support import bundled_gguf

session_loop = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 11, 22, 23, 50, tzinfo=UTC)
CENT = Decimal("0.01")


@pytest.fixture
def dsn(ledger_dsn: str) -> str:
    return ledger_dsn


@pytest.fixture
async def ledger(dsn: str) -> AsyncIterator[Ledger]:
    led = await Ledger.open(dsn, node_id="node-a", clock=lambda: T0)
    yield led
    await led.aclose()


async def counters(ledger: Ledger, key_id: str) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    c = budget_counters.c
    async with ledger.reading() as conn:
        rows = await conn.execute(select(c.period, c.limit_usd, c.spent_usd, c.reserved_usd)
                                  .where(c.key_id == key_id))
        return {period: (limit, spent, reserved) for period, limit, spent, reserved in rows}


async def reservations(ledger: Ledger) -> int:
    async with ledger.reading() as conn:
        return len((await conn.execute(select(budget_reservations))).all())


@dataclass(frozen=True)
class FakePrice:
    input: Decimal
    output: Decimal

    @property
    def dearest_input(self) -> Decimal:
        return self.input


def test_worst_case_cost_prices_every_token_at_full_rate() -> None:
    price = FakePrice(input=Decimal("0.15"), output=Decimal("0.60"))
    assert worst_case_cost(1000, 500, price) == Decimal("0.00045")
    assert worst_case_cost(0, 0, price) == 0
    with pytest.raises(ValueError):
        worst_case_cost(-1, 10, price)


@session_loop
async def test_reserve_and_settle_move_reserved_to_spent(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "k", daily_budget_usd=Decimal(1),
                              monthly_budget_usd=Decimal(5))
    got = await ledger.reserve(key.key_id, "r1", Decimal("0.3"), T0)
    assert (got.ok, got.remaining_day, got.remaining_month) == (True, Decimal("0.7"),
                                                                Decimal("4.7"))
    assert await counters(ledger, key.key_id) == {
        "day:2026-11-22": (1, 0, Decimal("0.3")), "month:2026-11": (5, 0, Decimal("0.3"))}
    assert await ledger.settle(key.key_id, "r1", Decimal("0.3"), Decimal("0.1234567891"))
    assert not await ledger.settle(key.key_id, "r1", Decimal("0.3"), Decimal("0.1"))  # no-op
    assert await counters(ledger, key.key_id) == {
        "day:2026-11-22": (1, Decimal("0.1234567891"), 0),
        "month:2026-11": (5, Decimal("0.1234567891"), 0)}
    snap = await ledger.budget_snapshot(key.key_id)
    assert snap.daily_remaining == Decimal("0.8765432109")
    assert snap.monthly_remaining == Decimal("4.8765432109")


@session_loop
async def test_keys_without_budgets_reserve_nothing(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "free")
    got = await ledger.reserve(key.key_id, "r1", Decimal(1000), T0)
    assert (got.ok, got.remaining_day, got.remaining_month) == (True, None, None)
    assert await counters(ledger, key.key_id) == {}
    assert await reservations(ledger) == 0
    assert not await ledger.settle(key.key_id, "r1", Decimal(1000), Decimal(1))


@session_loop
async def test_refusal_by_month_rolls_back_the_day(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "k", daily_budget_usd=Decimal(1),
                              monthly_budget_usd=Decimal("0.5"))
    got = await ledger.reserve(key.key_id, "r1", Decimal("0.6"), T0)
    assert not got.ok and got.remaining_month == Decimal("0.5")
    assert all(reserved == 0 for _, _, reserved in (await counters(ledger, key.key_id)).values())
    assert await reservations(ledger) == 0


@session_loop
async def test_200_concurrent_reservations_never_exceed_the_budget(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "busy", daily_budget_usd=Decimal(1))
    results = await asyncio.gather(*(ledger.reserve(key.key_id, f"r{i}", CENT, T0)
                                     for i in range(200)))
    assert sum(r.ok for r in results) == 100  # exactly what $1 holds: none over, none lost
    limit, spent, reserved = (await counters(ledger, key.key_id))["day:2026-11-22"]
    assert spent + reserved <= limit and reserved == Decimal(1)


@session_loop
async def test_concurrent_reserve_and_settle_stay_within_budget(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "mixed", daily_budget_usd=Decimal(1))
    rng = random.Random(7)
    spent_total = Decimal(0)

    async def call(i: int) -> bool:
        nonlocal spent_total
        if not (await ledger.reserve(key.key_id, f"r{i}", CENT, T0)).ok:
            return False
        await asyncio.sleep(rng.random() * 0.01)
        actual = CENT * rng.randint(1, 100) / 100  # a real call costs at most its worst case
        spent_total += actual
        await ledger.settle(key.key_id, f"r{i}", CENT, actual)
        return True

    served = sum(await asyncio.gather(*(call(i) for i in range(200))))
    limit, spent, reserved = (await counters(ledger, key.key_id))["day:2026-11-22"]
    assert reserved == 0 and spent == spent_total <= limit
    assert served >= 100  # settling below the reservation frees budget for more calls


@session_loop
async def test_budget_periods_roll_over_in_utc(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "k", daily_budget_usd=Decimal("0.02"),
                              monthly_budget_usd=Decimal("0.05"))
    for i in range(2):
        assert (await ledger.reserve(key.key_id, f"d1-{i}", CENT, T0)).ok
    assert not (await ledger.reserve(key.key_id, "d1-x", CENT, T0)).ok  # day 1 is full
    day2 = T0 + timedelta(minutes=20)  # 00:10 UTC on the 23rd
    assert (await ledger.reserve(key.key_id, "d2-0", CENT, day2)).ok
    # settling after midnight charges the day the reservation was made on
    await ledger.settle(key.key_id, "d1-0", CENT, Decimal("0.004"))
    got = await ledger.reserve(key.key_id, "d2-1", CENT, day2)
    assert got.ok and got.remaining_day == 0 and got.remaining_month == Decimal("0.016")
    day3 = day2 + timedelta(days=1)
    assert (await ledger.reserve(key.key_id, "d3-0", CENT, day3)).ok
    month_full = await ledger.reserve(key.key_id, "d3-1", CENT, day3)  # the month is full
    assert not month_full.ok and month_full.remaining_month == Decimal("0.006")
    next_month = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    assert (await ledger.reserve(key.key_id, "m2", CENT, next_month)).ok
    c = await counters(ledger, key.key_id)
    assert c["day:2026-11-22"][1:] == (Decimal("0.004"), CENT)
    assert c["day:2026-11-24"][1:] == (0, CENT)  # d3-1's day reservation rolled back
    assert c["month:2026-11"][1:] == (Decimal("0.004"), Decimal("0.04"))
    assert c["month:2026-12"][1:] == (0, CENT)


@session_loop
async def test_recover_charges_abandoned_reservations_by_owner_or_age(dsn: str) -> None:
    crashed = await Ledger.open(dsn, node_id="node-a")
    other = await Ledger.open(dsn, node_id="node-b")
    try:
        key, _ = await create_key(crashed, "k", daily_budget_usd=Decimal(1))
        now = datetime.now(UTC)
        for i in range(3):
            crashed.begin(RequestStart(f"r{i}", now, key_id=key.key_id, tier="api"))
            assert (await crashed.reserve(key.key_id, f"r{i}", Decimal("0.1"), now)).ok
        await crashed.reserve(key.key_id, "never-written", Decimal("0.05"), now)
        await crashed.flush()
        # node-b restarting now must leave node-a's young rows alone ...
        assert await other.recover(now) == 0
        # ... and recover them once they are older than the grace period
        assert await other.recover(now + timedelta(minutes=11)) == 4
        rows = {r["request_id"]: r for r in await other.rows_between(
            now - timedelta(hours=1), now + timedelta(hours=1))}
        assert {r["state"] for r in rows.values()} == {"recovered"} and len(rows) == 4
        assert rows["r0"]["cost_usd"] == Decimal("0.1")
        assert rows["never-written"]["cost_usd"] == Decimal("0.05")
        assert rows["r0"]["usage_source"] == "estimated"
        assert (await counters(other, key.key_id))[f"day:{now:%Y-%m-%d}"][1:] == (
            Decimal("0.35"), 0)
        assert await reservations(other) == 0
        assert not await crashed.settle(key.key_id, "r0", Decimal("0.1"), Decimal("0.01"))
    finally:
        await crashed.aclose()
        await other.aclose()


def test_rate_limiter_requests_per_minute() -> None:
    limiter = RateLimiter()
    assert all(limiter.check("k", 3, None, 10, 100.0 + i) is None for i in range(3))
    wait = limiter.check("k", 3, None, 10, 103.0)
    assert wait == pytest.approx(57.0)
    assert limiter.check("other", 3, None, 10, 103.0) is None  # per key
    assert limiter.check("k", 3, None, 10, 160.5) is None  # the first request left the window


def test_rate_limiter_tokens_per_minute() -> None:
    limiter = RateLimiter()
    assert limiter.check("k", None, 1000, 600, 0.0) is None
    limiter.add_tokens("k", 300, 10.0)  # the completion, learnt at the end
    assert limiter.check("k", None, 1000, 200, 20.0) == pytest.approx(40.0)
    assert limiter.check("k", None, 1000, 100, 20.0) is None
    assert limiter.check("k", None, 1000, 50, 70.0) is None  # the first 600 expired
    assert limiter.check("big", None, 1000, 5000, 0.0) is None  # alone it may pass once
    assert limiter.check("big", None, 1000, 1, 1.0) is not None
    assert limiter.check("k", None, None, 10**9, 0.0) is None  # no limits, no counting


def test_key_info_json_keeps_money_exact() -> None:
    info = KeyInfo("key-1", "n", "sg-abc", T0, daily_budget_usd=Decimal("0.1000000000"))
    assert info.to_json()["daily_budget_usd"] == "0.1"


@session_loop
async def test_extending_a_reservation_is_atomic_and_refused_past_the_limit(
    ledger: Ledger,
) -> None:
    key, _ = await create_key(ledger, "fallback", daily_budget_usd=Decimal(1),
                              monthly_budget_usd=Decimal("0.7"))
    assert (await ledger.reserve(key.key_id, "r1", Decimal("0.3"), T0)).ok
    grown = await ledger.extend(key.key_id, "r1", Decimal("0.3"))
    assert (grown.ok, grown.remaining_day, grown.remaining_month) == (
        True, Decimal("0.4"), Decimal("0.1"))
    refused = await ledger.extend(key.key_id, "r1", Decimal("0.2"))  # the month holds 0.1
    assert not refused.ok
    assert await counters(ledger, key.key_id) == {
        "day:2026-11-22": (1, 0, Decimal("0.6")), "month:2026-11": (Decimal("0.7"), 0,
                                                                      Decimal("0.6"))}
    # settling releases the whole (extended) reservation
    assert await ledger.settle(key.key_id, "r1", Decimal("0.6"), Decimal("0.25"))
    assert await counters(ledger, key.key_id) == {
        "day:2026-11-22": (1, Decimal("0.25"), 0), "month:2026-11": (Decimal("0.7"),
                                                                     Decimal("0.25"), 0)}
    assert not (await ledger.extend(key.key_id, "r1", CENT)).ok  # nothing outstanding


@session_loop
async def test_concurrent_extensions_never_exceed_the_budget(ledger: Ledger) -> None:
    key, _ = await create_key(ledger, "race", daily_budget_usd=Decimal(1))

    async def call(i: int) -> Decimal:
        if not (await ledger.reserve(key.key_id, f"r{i}", CENT, T0)).ok:
            return Decimal(0)
        held = CENT
        if (await ledger.extend(key.key_id, f"r{i}", CENT * 2)).ok:
            held += CENT * 2
        await ledger.settle(key.key_id, f"r{i}", held, held)  # spends its whole bound
        return held

    spent = sum(await asyncio.gather(*(call(i) for i in range(100))), Decimal(0))
    limit, counted, reserved = (await counters(ledger, key.key_id))["day:2026-11-22"]
    assert reserved == 0 and counted == spent <= limit


@pytest.fixture(scope="module")
def bpe() -> Callable[[str], int]:
    """A real BPE tokenizer: the bundled SmolLM2's, through llama.cpp (vocabulary only)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    # Loaded before anything imports usearch (see spillgate.cache.index: loaded first, it
    # breaks llama.cpp's vocabulary loader in the same process).
    vocab = llama_cpp.Llama(model_path=bundled_gguf(), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_the_prompt_bound_is_never_below_a_bpe_token_count(
    bpe: Callable[[str], int], texts: list[str]
) -> None:
    body = orjson.dumps({"model": "m", "messages": [
        {"role": "user", "content": text} for text in texts]})
    assert sum(bpe(text) for text in texts) <= prompt_bound(body)


def test_an_image_by_url_adds_the_dearest_image_bill_to_the_bound() -> None:
    def body(url: str) -> dict[str, object]:
        return {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}]}

    by_url, inline = body("https://example.com/cat.png"), body("data:image/png;base64,AAAA")
    assert prompt_bound(orjson.dumps(by_url), by_url) == len(orjson.dumps(by_url)) + 48_169
    assert prompt_bound(orjson.dumps(inline), inline) == len(orjson.dumps(inline))


def test_the_bound_of_a_body_whose_messages_are_not_a_list_is_its_size() -> None:
    # The bound is taken before the body's shape is checked (a CI-like run's fuzzing sent
    # {"model":"auto","prompt":"","messages":true} and got a 500): it must not fail on any
    # JSON value, so the request reaches validation and its 400.
    for messages in (True, 7, "text", None, {"role": "user"}, [True, "x", None]):
        body = {"model": "auto", "prompt": "", "messages": messages}
        raw = orjson.dumps(body)
        assert prompt_bound(raw, body) == len(raw)
