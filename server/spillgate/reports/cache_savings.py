"""What the response cache saved in a window: hits, tokens not processed, cost avoided, per
key, per tag and per route.

A hit's ledger row (tier 'cache', cost 0) carries `saved_tokens` and `avoided_usd` (the cost
of the answer it replayed). One GROUP BY over the window's hit rows by (key, route, tag set)
gives every figure; the split per key, tag and route is summed here from those groups, so
the three views always add up to the same totals.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, Text, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.ledger.migrations import READONLY, open_engine
from spillgate.ledger.schema import Money, requests

ZERO = Decimal(0)


@dataclass(slots=True)
class Saved:
    hits: int = 0
    saved_tokens: int = 0
    avoided_usd: Decimal = ZERO

    def add(self, other: Saved) -> None:
        self.hits += other.hits
        self.saved_tokens += other.saved_tokens
        self.avoided_usd += other.avoided_usd

    def to_json(self) -> dict[str, Any]:
        return {"hits": self.hits, "saved_tokens": self.saved_tokens,
                "avoided_usd": format(self.avoided_usd.normalize(), "f")}


def savings_query(since: datetime, until: datetime) -> Select[Any]:
    r = requests.c
    tags = cast(r.tags, Text)  # PostgreSQL's json has no equality to group by; text has
    return (select(r.key_id, r.route, tags.label("tags"), func.count().label("hits"),
                   func.sum(r.saved_tokens).label("saved_tokens"),
                   func.sum(r.avoided_usd, type_=Money()).label("avoided_usd"))
            .where(r.cache != "", r.status == 200, r.started_at >= since,
                   r.started_at < until)
            .group_by(r.key_id, r.route, tags))


async def read_savings(conn: AsyncConnection, since: datetime,
                       until: datetime) -> dict[str, Any]:
    rows = await conn.execute(savings_query(since, until))
    return summarize(dict(row._mapping) for row in rows)


def savings_off_loop(dsn: str, since: datetime, until: datetime) -> dict[str, Any]:
    """`read_savings` in this (worker) thread with its own event loop and connection."""
    async def run() -> dict[str, Any]:
        engine = open_engine(dsn)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(**{READONLY: True})
                return await read_savings(conn, since, until)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def summarize(groups: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals and the split per key, per tag (`k=v`) and per route."""
    total = Saved()
    views: dict[str, dict[str, Saved]] = {"by_key": {}, "by_tag": {}, "by_route": {}}
    for group in groups:
        saved = Saved(int(group["hits"]), int(group["saved_tokens"] or 0),
                      Decimal(group["avoided_usd"] or 0))
        total.add(saved)
        tags = group["tags"]
        if isinstance(tags, str):
            tags = json.loads(tags)
        names = {
            "by_key": [group["key_id"] or "(no key)"],
            "by_tag": [f"{k}={v}" for k, v in sorted((tags or {}).items())],
            "by_route": [group["route"] or "(none)"],
        }
        for view, labels in names.items():
            for label in labels:
                views[view].setdefault(label, Saved()).add(saved)
    return {"totals": total.to_json(),
            **{view: {k: v.to_json() for k, v in sorted(parts.items())}
               for view, parts in views.items()}}
