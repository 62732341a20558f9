"""What batches did to the node's cost: their tokens, their amortized cost, the utilization
they added and the idle cost they absorbed. `batch_figures` is pure; `batch_report` reads
the window's batch rows and hardware periods from the ledger (the node's endpoint);
`batches_off_loop` does the same in a worker thread with its own connection (`spillgate
report`, through gather.py).

Every figure is a sum or a ratio of sums of ledger columns (rows tagged `batch=<id>`, the
tag the scheduler puts on each line; hardware_periods of the window):
- tokens = prompt_tokens + completion_tokens of the batch rows, local and API apart.
- local cost = sum(cost_usd) of local batch rows: the cost clock's share of busy hardware
  time given to the batch lines (amortized hardware and energy).
- $/1M local = local cost / local batch tokens * 1e6.
- idle cost absorbed = the local cost: the scheduler runs lines only while live traffic
  leaves the engine idle, so without the batch that hardware time would have been idle
  and its cost would have sat in idle_usd. `absorbed_share` = absorbed / (absorbed +
  idle_usd left in the window).
- utilization added = (local cost / busy_usd of the periods) * busy_s / (busy_s + idle_s):
  the batch's share of busy time, as a share of all the window's time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.costing.pricing import MILLION, decimal_text
from spillgate.ledger.migrations import READONLY, open_engine
from spillgate.ledger.schema import hardware_periods, requests
from spillgate.ledger.store import Ledger

BATCH_TAG = "batch"
ZERO = Decimal(0)


def batch_id_of(row: Mapping[str, Any]) -> str | None:
    tags = row.get("tags") or {}
    value = tags.get(BATCH_TAG) if isinstance(tags, dict) else None
    return str(value) if value else None


def _sums(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": 0, "local_tokens": 0, "api_tokens": 0,
                           "local_usd": ZERO, "api_usd": ZERO}
    for row in rows:
        tokens = int(row["prompt_tokens"]) + int(row["completion_tokens"])
        tier = "api" if row["tier"] == "api" else "local"
        out["requests"] += 1
        out[f"{tier}_tokens"] += tokens
        out[f"{tier}_usd"] += Decimal(row["cost_usd"])
    return out


def _ratio(part: Decimal | float, whole: Decimal | float) -> float | None:
    return float(part) / float(whole) if whole else None


def batch_figures(rows: Iterable[Mapping[str, Any]],
                  periods: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The batch figures of a window (module docstring), JSON-ready."""
    mine = [r for r in rows if batch_id_of(r)]
    by_batch: dict[str, list[Mapping[str, Any]]] = {}
    for row in mine:
        by_batch.setdefault(batch_id_of(row) or "", []).append(row)
    hardware = list(periods)
    busy_s = sum(float(p["busy_s"]) for p in hardware)
    idle_s = sum(float(p["idle_s"]) for p in hardware)
    busy_usd = sum((Decimal(p["busy_usd"]) for p in hardware), ZERO)
    idle_usd = sum((Decimal(p["idle_usd"]) for p in hardware), ZERO)
    total = _sums(mine)
    local_usd: Decimal = total["local_usd"]
    busy_share = min(1.0, _ratio(local_usd, busy_usd) or 0.0)
    time_share = _ratio(busy_s, busy_s + idle_s)
    per_million = _ratio(local_usd * MILLION, total["local_tokens"])
    return {
        "batches": len(by_batch),
        "requests": total["requests"],
        "local_tokens": total["local_tokens"],
        "api_tokens": total["api_tokens"],
        "local_cost_usd": decimal_text(local_usd),
        "api_cost_usd": decimal_text(total["api_usd"]),
        "local_usd_per_million_tokens": per_million,
        "idle_cost_absorbed_usd": decimal_text(local_usd),
        "idle_cost_left_usd": decimal_text(idle_usd),
        "absorbed_share": _ratio(local_usd, local_usd + idle_usd),
        "utilization_added": None if time_share is None else busy_share * time_share,
        "per_batch": {
            batch_id: {k: decimal_text(v) if isinstance(v, Decimal) else v
                       for k, v in _sums(batch_rows).items()}
            for batch_id, batch_rows in sorted(by_batch.items())
        },
    }


async def read_batch_figures(conn: AsyncConnection, since: datetime,
                             until: datetime) -> dict[str, Any]:
    """`batch_figures` of the settled batch rows and hardware periods started in the window."""
    r, h = requests.c, hardware_periods.c
    # The text match only narrows the scan to rows naming the tag; batch_id_of decides.
    rows = await conn.execute(
        select(r.tags, r.tier, r.prompt_tokens, r.completion_tokens, r.cost_usd).where(
            r.started_at >= since, r.started_at < until, r.state != "open",
            cast(r.tags, Text).like(f'%"{BATCH_TAG}"%')))
    periods = await conn.execute(
        select(h.busy_s, h.idle_s, h.busy_usd, h.idle_usd).where(
            h.started_at >= since, h.started_at < until))
    return batch_figures([dict(x._mapping) for x in rows],
                         [dict(x._mapping) for x in periods])


async def batch_report(ledger: Ledger, since: datetime, until: datetime) -> dict[str, Any]:
    async with ledger.reading() as conn:
        figures = await read_batch_figures(conn, since, until)
    return {"since": since.isoformat(), "until": until.isoformat(), **figures}


def batches_off_loop(dsn: str, since: datetime, until: datetime) -> dict[str, Any]:
    """`read_batch_figures` in this (worker) thread with its own event loop and connection."""
    async def run() -> dict[str, Any]:
        engine = open_engine(dsn)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(**{READONLY: True})
                return await read_batch_figures(conn, since, until)
        finally:
            await engine.dispose()

    return asyncio.run(run())
