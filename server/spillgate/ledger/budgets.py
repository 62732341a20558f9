"""Paid-API budgets: worst-case reservation arithmetic and the atomic counter statements.

A paid call first reserves its worst-case cost against the key's daily and monthly counters,
then settles (reserved -> spent at the actual cost) when it ends. The check and the increment
are ONE statement per counter,

    UPDATE budget_counters SET reserved_usd = reserved_usd + :amount
    WHERE key_id = :key AND period = :period AND spent_usd + reserved_usd + :amount <= limit_usd

so concurrent requests (tasks, processes, replicas on one PostgreSQL) can never push
spent + reserved past the limit: the database serializes writers on the counter row and each
re-evaluates the condition. Both periods are reserved in one transaction, rolled back if
either refuses. Counters are created (INSERT ... SELECT from the key's budgets, ON CONFLICT
DO NOTHING) the first time a key reserves in a period, and never deleted.
A `budget_reservations` row remembers what was reserved for which request;
settling deletes it first, so a second settle (or a settle after crash recovery) is a no-op.
A fallback to a dearer model extends the reservation by the difference with the same
conditional UPDATE (`extend_in`), so it too can never pass the limit.

The reservation is a true upper bound of what the provider can bill
(`tenancy.budgets.prompt_bound`): BPE
tokens never outnumber the UTF-8 bytes they encode, so the request body's size in bytes
bounds the prompt tokens, and `max_tokens` (times `n`) bounds the output. Settling moves the
actual cost to spent and releases the rest; the actual cost can exceed the reservation only
if a provider bills beyond that bound, which is logged as an error.

The functions here take an open connection inside the caller's transaction; `Ledger` owns
transactions, locking and caching.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    delete,
    insert,
    literal,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from spillgate.ledger.schema import Money, api_keys, budget_counters, budget_reservations


def day_period(now: datetime) -> str:
    return f"day:{now:%Y-%m-%d}"


def month_period(now: datetime) -> str:
    return f"month:{now:%Y-%m}"


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """Whether the reservation was taken, and what remains (None = no budget that period)."""

    ok: bool
    remaining_day: Decimal | None
    remaining_month: Decimal | None


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    daily_remaining: Decimal | None
    monthly_remaining: Decimal | None


def _remaining() -> ColumnElement[Decimal]:
    c = budget_counters.c
    return type_coerce(c.limit_usd - c.spent_usd - c.reserved_usd, Money())


async def key_limits(conn: AsyncConnection, key_id: str) -> tuple[bool, bool]:
    """Whether the key has a (daily, monthly) budget. Budgets are fixed when a key is made."""
    k = api_keys.c
    row = (await conn.execute(select(k.daily_budget_usd, k.monthly_budget_usd)
                              .where(k.key_id == key_id))).first()
    return (False, False) if row is None else (row[0] is not None, row[1] is not None)


async def _ensure_counters(conn: AsyncConnection, key_id: str, day: str, month: str) -> None:
    """Create this day's and month's counters from the key's budgets (where it has them)."""
    k = api_keys.c

    def part(period: str, limit: ColumnElement[Decimal | None]) -> Select[Any]:
        return select(k.key_id, literal(period), limit, literal(0), literal(0)).where(
            and_(k.key_id == key_id, limit.is_not(None)))

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(budget_counters).from_select(
        ["key_id", "period", "limit_usd", "spent_usd", "reserved_usd"],
        union_all(part(day, k.daily_budget_usd), part(month, k.monthly_budget_usd)),
    ).on_conflict_do_nothing(index_elements=["key_id", "period"])
    await conn.execute(stmt)


async def _take(conn: AsyncConnection, key_id: str, period: str,
                amount: Decimal) -> Decimal | None:
    """The atomic check-and-reserve on one counter: the remaining budget after it, or None
    when the counter cannot hold `amount` (nothing changed)."""
    c = budget_counters.c
    stmt = (
        update(budget_counters)
        .where(c.key_id == key_id, c.period == period,
               c.spent_usd + c.reserved_usd + type_coerce(amount, Money()) <= c.limit_usd)
        .values(reserved_usd=c.reserved_usd + type_coerce(amount, Money()))
        .returning(_remaining())
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def counter_remaining(conn: AsyncConnection, key_id: str, period: str) -> Decimal | None:
    c = budget_counters.c
    stmt = select(_remaining()).where(c.key_id == key_id, c.period == period)
    return (await conn.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Reservation:
    """One paid request's reservation: which key, when, how much, on which periods."""

    key_id: str
    request_id: str
    amount: Decimal
    now: datetime
    node_id: str
    limited: tuple[bool, bool]  # the key has a (daily, monthly) budget


async def reserve_in(conn: AsyncConnection, r: Reservation, *, ensure: bool) -> ReserveResult:
    """Reserve on the key's limited periods, day first then month (one lock order for all,
    so concurrent transactions cannot deadlock). On refusal the caller must roll back.
    `ensure` creates the period counters first (needed once per key and period)."""
    if r.amount < 0:
        raise ValueError("a reservation cannot be negative")
    day, month = day_period(r.now), month_period(r.now)
    if ensure:
        await _ensure_counters(conn, r.key_id, day, month)
    left: list[Decimal | None] = [None, None]
    for i, period in enumerate((day, month)):
        if not r.limited[i]:
            continue
        left[i] = await _take(conn, r.key_id, period, r.amount)
        if left[i] is None:  # refused: report what the periods had before this request
            before = [await counter_remaining(conn, r.key_id, p) if r.limited[j] else None
                      for j, p in enumerate((day, month))]
            if i == 1 and before[0] is not None:
                before[0] += r.amount
            return ReserveResult(False, before[0], before[1])
    await conn.execute(insert(budget_reservations).values(
        request_id=r.request_id, key_id=r.key_id, amount_usd=r.amount, created_at=r.now,
        node_id=r.node_id, day_period=day if r.limited[0] else None,
        month_period=month if r.limited[1] else None,
    ))
    return ReserveResult(True, left[0], left[1])


async def extend_in(conn: AsyncConnection, request_id: str, extra: Decimal,
                    ) -> tuple[bool, Decimal | None, Decimal | None]:
    """Grow an outstanding reservation by `extra` on every period it holds, atomically per
    counter (the same conditional UPDATE as `reserve_in`). (ok, remaining day, remaining
    month); on refusal the caller must roll back. No reservation outstanding: refused."""
    if extra < 0:
        raise ValueError("a reservation cannot shrink by extending it")
    r = budget_reservations.c
    held = (await conn.execute(
        select(r.key_id, r.day_period, r.month_period).where(r.request_id == request_id)
    )).first()
    if held is None:
        return False, None, None
    key_id, day, month = held
    left: list[Decimal | None] = [None, None]
    for i, period in enumerate((day, month)):
        if period is None:
            continue
        left[i] = await _take(conn, key_id, period, extra)
        if left[i] is None:  # refused: report what the periods hold
            before = [await counter_remaining(conn, key_id, p) if p else None
                      for p in (day, month)]
            return False, before[0], before[1]
    await conn.execute(
        update(budget_reservations).where(r.request_id == request_id)
        .values(amount_usd=r.amount_usd + type_coerce(extra, Money()))
    )
    return True, left[0], left[1]


async def settle_in(conn: AsyncConnection, request_id: str, actual: Decimal) -> bool:
    """Move the request's reservation to spent at `actual`; False if none was outstanding."""
    r = budget_reservations.c
    gone = (
        await conn.execute(
            delete(budget_reservations).where(r.request_id == request_id)
            .returning(r.key_id, r.day_period, r.month_period, r.amount_usd)
        )
    ).first()
    if gone is None:
        return False
    # reserved -= the reservation's amount, spent += actual, on each period it reserved on
    key_id, day, month, amount = gone
    c = budget_counters.c
    for period in (p for p in (day, month) if p is not None):
        await conn.execute(
            update(budget_counters)
            .where(c.key_id == key_id, c.period == period)
            .values(reserved_usd=c.reserved_usd - type_coerce(amount, Money()),
                    spent_usd=c.spent_usd + type_coerce(actual, Money()))
        )
    return True


async def snapshot_in(conn: AsyncConnection, key_id: str, now: datetime) -> BudgetSnapshot:
    """Remaining budget this day and month; a period with no counter yet has its full limit."""
    k = api_keys.c
    limits = (await conn.execute(
        select(k.daily_budget_usd, k.monthly_budget_usd).where(k.key_id == key_id)
    )).first()
    if limits is None:
        return BudgetSnapshot(None, None)
    day = await counter_remaining(conn, key_id, day_period(now))
    month = await counter_remaining(conn, key_id, month_period(now))
    return BudgetSnapshot(
        day if day is not None else limits[0],
        month if month is not None else limits[1],
    )
