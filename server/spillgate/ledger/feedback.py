"""Client feedback on a request's answer, stored on its ledger row.

A key rates only its own requests: the update matches the request id AND the key that made
it, so a request of another key looks exactly like one that does not exist (nothing tells a
caller whether someone else's id is real). Requests made without a key (anonymous loopback
access) are rated without one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from spillgate.ledger.schema import requests
from spillgate.ledger.store import Ledger


async def rate(ledger: Ledger, request_id: str, key_id: str | None, score: float,
               now: datetime | None = None) -> bool:
    """Store `score` on the row of `request_id` made by `key_id`; False when no such row.
    A second rating replaces the first."""
    await ledger.flush()  # the row of a request answered a moment ago may still be queued
    owner = requests.c.key_id.is_(None) if key_id is None else requests.c.key_id == key_id
    statement = (update(requests)
                 .where(requests.c.request_id == request_id, owner)
                 .values(feedback=score, feedback_at=now or ledger.now()))
    async with ledger.transaction() as conn:
        result = await conn.execute(statement)
    return result.rowcount == 1
