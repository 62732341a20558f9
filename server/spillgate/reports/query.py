"""The report's reads: grouped sums from the database, never every row.

`read_inputs` returns what `reports.report_from_views` needs for a window:
- request sums by hour, by key and by tag set (rollup.Views): for the whole hours inside
  the window, one GROUP BY each over the `request_rollup` table; for the partial hours at
  its edges, one GROUP BY over their rows;
- hardware periods summed per UTC hour by one GROUP BY over `hardware_periods`.
Both are small (hours + keys + tag sets; hours), so memory and time do not grow with the
number of requests. `report_off_loop` runs a whole report in a worker thread with its own
event loop and its own connections, so the node's event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from spillgate.ledger import rollup
from spillgate.ledger.migrations import READONLY, open_engine
from spillgate.ledger.schema import Money, hardware_periods
from spillgate.reports.figures import Period

HOUR = timedelta(hours=1)
T = TypeVar("T")


def ceil_hour(moment: datetime) -> datetime:
    floor = rollup.hour_of(moment)
    return floor if floor == moment else floor + HOUR


async def read_views(conn: AsyncConnection, since: datetime, until: datetime) -> rollup.Views:
    """Request sums by hour, key and tag set for rows started in [since, until): the whole
    hours by GROUP BY over the rollup, the partial edge hours over their rows."""
    views = rollup.Views()
    first, last = ceil_hour(since), rollup.hour_of(until)
    edges = [(since, until)]
    if first < last:
        for dim in rollup.DIMENSIONS:
            result = await conn.execute(rollup.rollup_view_query(dim, first, last))
            rollup.merge(views.view(dim), (rollup.from_view_row(dim, row) for row in result))
        edges = [(since, first), (last, until)]
    for start, end in edges:
        if start < end:
            query = rollup.raw_groups_query(conn.dialect.name, start, end)
            views.add(rollup.merge({}, map(rollup.from_raw_row, await conn.execute(query))))
    return views


async def read_periods(conn: AsyncConnection, since: datetime, until: datetime) -> list[Period]:
    """Hardware periods started in [since, until), summed per UTC hour."""
    h = hardware_periods.c
    if conn.dialect.name == "sqlite":
        hour: Any = func.substr(h.started_at, 1, 13)
    else:
        hour = func.date_trunc("hour", func.timezone("UTC", h.started_at))
    sums = [
        func.sum(h.busy_s).label("busy_s"), func.sum(h.idle_s).label("idle_s"),
        func.sum(h.busy_usd, type_=Money()).label("busy_usd"),
        func.sum(h.idle_usd, type_=Money()).label("idle_usd"),
    ]  # fmt: skip
    # Added by a later migration (power source, busy cost no request carries): summed when
    # the schema has them.
    if "measured_s" in h:
        sums.append(func.sum(h.measured_s).label("measured_s"))
    if "unattributed_usd" in h:
        sums.append(func.sum(h.unattributed_usd, type_=Money()).label("unattributed_usd"))
    query = (select(hour.label("hour"), *sums)
             .where(h.started_at >= since, h.started_at < until).group_by(hour))  # fmt: skip
    return [_period(row._mapping) for row in await conn.execute(query)]


def _period(m: Any) -> Period:
    hour = m["hour"]
    start = datetime.fromisoformat(f"{hour}:00") if isinstance(hour, str) else hour
    measured = m.get("measured_s")
    return Period(
        started_at=rollup.as_utc(start),
        busy_s=float(m["busy_s"] or 0.0),
        idle_s=float(m["idle_s"] or 0.0),
        busy_usd=Decimal(m["busy_usd"] or 0),
        idle_usd=Decimal(m["idle_usd"] or 0),
        measured_s=None if measured is None else float(measured),
        unattributed_usd=Decimal(m.get("unattributed_usd") or 0),
    )


async def read_inputs(engine: AsyncEngine, since: datetime,
                      until: datetime) -> tuple[rollup.Views, list[Period]]:  # fmt: skip
    """Views and periods of the window, read in one read transaction (one snapshot)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READONLY: True})
        return await read_views(conn, since, until), await read_periods(conn, since, until)


def report_off_loop(dsn: str, since: datetime, until: datetime,
                    build: Callable[[rollup.Views, list[Period]], T]) -> T:
    """Read the window and `build` from it, in this (worker) thread with its own event loop
    and connections: `await asyncio.to_thread(report_off_loop, ...)` from the node."""

    async def run() -> T:
        engine = open_engine(dsn)
        try:
            views, periods = await read_inputs(engine, since, until)
        finally:
            await engine.dispose()
        return build(views, periods)

    return asyncio.run(run())
