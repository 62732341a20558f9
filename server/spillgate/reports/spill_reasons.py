"""Paid-API requests of a window by routing reason: why traffic left the node.

One GROUP BY over the final request rows (the rollup keeps no reason): each paid reason with
its requests, tokens and spend, its share of the window's non-sensitive requests (the ones
that could spill at all), and whether it counts as a capacity spill (rollup.is_spill).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from spillgate.costing.pricing import decimal_text
from spillgate.ledger.rollup import NOT_FINAL, is_spill
from spillgate.ledger.schema import Money, requests
from spillgate.ledger.store import Ledger


async def spill_by_reason(ledger: Ledger, since: datetime, until: datetime) -> dict[str, Any]:
    r = requests.c
    final = (r.state.not_in(NOT_FINAL), r.started_at >= since, r.started_at < until)
    by_reason = (
        select(r.reason, func.count().label("requests"),
               func.sum(r.prompt_tokens + r.completion_tokens).label("tokens"),
               func.sum(r.cost_usd, type_=Money()).label("usd"))
        .where(r.tier == "api", *final).group_by(r.reason).order_by(r.reason)
    )
    plain = select(func.count()).where(r.sensitivity.in_(("", "[]")), *final)
    async with ledger.reading() as conn:
        rows = (await conn.execute(by_reason)).all()
        nonsensitive = int(await conn.scalar(plain) or 0)
    reasons = []
    for row in rows:
        count = int(row.requests)
        reasons.append({
            "reason": row.reason, "requests": count, "tokens": int(row.tokens or 0),
            "usd": decimal_text(Decimal(row.usd or 0)),
            "share": None if nonsensitive == 0 else count / nonsensitive,
            "spill": is_spill("api", False, row.reason),
        })
    return {"since": since.isoformat(), "until": until.isoformat(),
            "nonsensitive_requests": nonsensitive, "reasons": reasons}
