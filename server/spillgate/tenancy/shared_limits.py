"""RPM/TPM windows shared by every replica on one PostgreSQL ledger.

The window is the same sliding 60 s window as the in-process `RateLimiter`, kept as one
`rate_events` row per admitted request (its time and token estimate). A check is one
transaction:

    pg_advisory_xact_lock(namespace, hashtext(key))   -- replicas take turns per key
    DELETE the key's rows older than 60 s
    SELECT the key's remaining rows                   -- at most rpm of them
    decide with `Window.refusal`; INSERT a row when admitted

so concurrent requests for one key, from any replica, are decided one after another on the
same rows, and the limit holds in total. Times come from the database's clock, so replicas
on different machines agree on the window without trusting their own clocks. Other keys
never wait: the lock is per key, and is released at commit.

Why not fixed per-minute counters (one UPSERT)? They admit up to twice the limit across a
minute boundary and cannot say when tokens leave the window; rows keep the semantics the
single-replica limiter already has (and its tests describe).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.ledger.schema import rate_events
from spillgate.tenancy.limits import WINDOW_S, RateLimiter, Window

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

    async def check(self, key_id: str, rpm: int | None, tpm: int | None,
                    tokens_estimate: int) -> float | None:
        """None, and the request is counted; or the seconds to wait before retrying."""
        if rpm is None and tpm is None:
            return None
        try:
            async with self._ledger.transaction() as conn:
                return await self._check_in(conn, key_id, rpm, tpm, tokens_estimate)
        except Exception:  # an unreachable database must not stop serving
            log.exception("shared rate window unavailable; limiting in this replica only")
            return self._fallback.check(key_id, rpm, tpm, tokens_estimate, time.monotonic())

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
        rows = (await conn.execute(
            select(e.at, e.tokens).where(e.key_id == key_id).order_by(e.at))).all()
        window = Window(requests=deque(at for at, _ in rows),
                         tokens=deque((at, n) for at, n in rows if n > 0),
                         used=sum(n for _, n in rows))
        wait = window.refusal(rpm, tpm, tokens_estimate, now)
        if wait is None:
            await conn.execute(insert(rate_events).values(
                key_id=key_id, at=now, tokens=max(0, tokens_estimate)))
        return wait
