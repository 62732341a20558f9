"""RPM/TPM windows shared by every replica on one PostgreSQL ledger.

The window is the same sliding 60 s window as the in-process `RateLimiter`, kept as one
`rate_events` row per admitted request (its time and token estimate). A check is one
transaction:

    pg_advisory_xact_lock(namespace, hashtext(key))   -- replicas take turns per key
    DELETE the key's rows older than 60 s
    SELECT count(*), sum(tokens) of the key's rows    -- an index range, no rows fetched
    decide with `over_limit`; INSERT a row when admitted, or, when refused, find when the
    oldest request (RPM) or enough tokens (TPM, a running sum) leave: the Retry-After

so concurrent requests for one key, from any replica, are decided one after another on the
same rows, and the limit holds in total. Times come from the database's clock, so replicas
on different machines agree on the window without trusting their own clocks. Other keys
never wait: the lock is per key, and is released at commit.

Why not fixed per-minute counters (one UPSERT)? They admit up to twice the limit across a
minute boundary and cannot say when tokens leave the window; rows keep the semantics the
single-replica limiter already has (and its tests describe).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.ledger.schema import rate_events
from spillgate.tenancy.limits import WINDOW_S, RateLimiter, RequestsOver, over_limit

if TYPE_CHECKING:
    from spillgate.ledger.store import Ledger

log = logging.getLogger(__name__)
_LOCK_NAMESPACE = 0x5B16  # first key of the two-key advisory lock: spillgate rate windows
SWEEP_EVERY_S = 60.0  # rows of keys that went idle are removed by any replica this often


class SharedRateLimiter:
    """Per-key RPM/TPM over rows in the ledger's PostgreSQL database (see module notes).

    If the database cannot be reached the check falls back to this replica's in-process
    window (logged): limits then hold per replica, and serving goes on."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._fallback = RateLimiter()
        self._swept_at = 0.0
        self._warned_at = -WINDOW_S
        # Checks for one key queue here first, so a hot key holds at most one pooled
        # connection of this replica (waiting on the advisory lock), never the whole pool.
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def check(self, key_id: str, rpm: int | None, tpm: int | None,
                    tokens_estimate: int) -> float | None:
        """None, and the request is counted; or the seconds to wait before retrying."""
        if rpm is None and tpm is None:
            return None
        turn = self._turns.get(key_id)
        if turn is None:
            turn = self._turns[key_id] = asyncio.Lock()
        try:
            async with turn, self._ledger.transaction() as conn:
                return await self._check_in(conn, key_id, rpm, tpm, tokens_estimate)
        except Exception:  # an unreachable database must not stop serving
            now = time.monotonic()
            if now - self._warned_at >= WINDOW_S:  # once a minute, not once a request
                self._warned_at = now
                log.exception("shared rate window unavailable; limiting in this replica only")
            return self._fallback.check(key_id, rpm, tpm, tokens_estimate, now)

    async def _check_in(self, conn: AsyncConnection, key_id: str, rpm: int | None,
                        tpm: int | None, tokens_estimate: int) -> float | None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
                           {"ns": _LOCK_NAMESPACE, "key": key_id})
        now = float((await conn.execute(
            select(func.extract("epoch", func.clock_timestamp())))).scalar_one())
        horizon = now - WINDOW_S
        e = rate_events.c
        await conn.execute(delete(rate_events).where(e.key_id == key_id, e.at <= horizon))
        if now - self._swept_at >= SWEEP_EVERY_S:  # expired rows of idle keys
            self._swept_at = now
            await conn.execute(delete(rate_events).where(e.at <= horizon))
        count, used = (await conn.execute(
            select(func.count(), func.coalesce(func.sum(e.tokens), 0))
            .where(e.key_id == key_id))).one()
        over = over_limit(count, int(used), rpm, tpm, tokens_estimate)
        if over is None:
            await conn.execute(insert(rate_events).values(
                key_id=key_id, at=now, tokens=max(0, tokens_estimate)))
            return None
        leaves = await (_oldest(conn, key_id) if isinstance(over, RequestsOver)
                        else _tokens_gone(conn, key_id, over.excess))
        return WINDOW_S if leaves is None else max(0.001, leaves + WINDOW_S - now)


async def _oldest(conn: AsyncConnection, key_id: str) -> float | None:
    """Time of the key's oldest request in the window: a slot frees when it leaves."""
    e = rate_events.c
    oldest: float | None = (await conn.execute(
        select(func.min(e.at)).where(e.key_id == key_id))).scalar_one()
    return oldest


async def _tokens_gone(conn: AsyncConnection, key_id: str, excess: int) -> float | None:
    """Time of the request by whose leaving at least `excess` tokens have left the window
    (a running sum from the oldest), or None if the window never frees that many."""
    e = rate_events.c
    running = select(e.at, func.sum(e.tokens).over(order_by=(e.at, e.id)).label("freed")
                     ).where(e.key_id == key_id).subquery()
    at: float | None = (await conn.execute(
        select(running.c.at).where(running.c.freed >= excess)
        .order_by(running.c.at).limit(1))).scalar_one_or_none()
    return at
