"""How long a cost report takes, and how much memory, over a ledger of N requests.

    .venv/bin/python scripts/bench_report.py [--rows 1000000] [--days 30]
        [--dsn postgresql+asyncpg://user@host/empty_db] [--keep path.db]

Fills a fresh ledger (a temporary SQLite file, or the given DSN: an empty database) with
N synthetic settled requests spread evenly over `--days` days (20 keys x 8 tag sets, local
and paid, some sensitive, some spilled) plus one hardware period a minute, by bulk insert:
executemany on the SQLite file, COPY on PostgreSQL. The hourly rollup the batcher would
have kept is filled alongside (rollup.group_key over the same rows).

Then it times, for three windows (the whole ledger, its last day, a ragged 30-day window
with partial edge hours):
- `cli`: `spillgate report --format json` as a separate process, as an operator runs it:
  wall seconds and the process's peak RSS (MB), imports included;
- `inproc`: read_inputs + report_from_views + render_report(json) in this process: wall
  seconds and tracemalloc's peak of Python allocations (MB).
Prints a table and writes var/bench_report.json. Target (issue 11): <= 5 s, <= 200 MB at 10M.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from spillgate.costing.hardware import get_profile, load_profiles
from spillgate.costing.pricing import PriceBook
from spillgate.ledger import rollup
from spillgate.ledger.rollup import GroupKey, GroupSums
from spillgate.ledger.schema import hardware_periods
from spillgate.ledger.store import Ledger
from spillgate.reports.figures import report_from_views
from spillgate.reports.query import read_inputs
from spillgate.reports.render import render_report
from spillgate.settings import repo_models_dir

ROOT = Path(__file__).resolve().parents[1]
END = datetime(2026, 11, 1, tzinfo=UTC)
UNIT = Decimal("1e-10")  # SQLite stores money as integer 1e-10 USD


@dataclass(frozen=True, slots=True)
class Kind:
    """One synthetic request shape; row i takes kind i % len(KINDS)."""

    key_id: str
    tags: dict[str, str]
    tier: str
    reason: str
    sensitivity: str
    prompt: int
    cached: int
    completion: int
    cost: Decimal
    counterfactual: Decimal


def kinds() -> list[Kind]:
    out = []
    for k in range(20 * 8):
        tier = "api" if k % 4 == 0 else "local"
        out.append(Kind(
            key_id=f"key-{k % 20:02d}",
            tags={"team": f"t{k % 8}", "env": "prod" if k % 2 else "dev"},
            tier=tier,
            reason=("overflow:queue" if k % 8 == 0 else "pinned_api") if tier == "api"
            else "local_first",
            sensitivity="email" if k % 5 == 0 else "",
            prompt=200 + k, cached=k % 3 * 50, completion=100 + k % 17,
            cost=Decimal("0.0000123456") * (1 + k % 7),
            counterfactual=Decimal("0.0001") * (1 + k % 3),
        ))  # fmt: skip
    return out


def row_values(i: int, n: int, days: int, kind: Kind, sqlite_form: bool) -> tuple[Any, ...]:
    started = END - timedelta(days=days) + timedelta(seconds=days * 86400 * i / n)
    finished = started + timedelta(seconds=1)
    cost, cf = kind.cost, kind.counterfactual
    if sqlite_form:
        return (f"r{i}", "bench", _sqlite_time(started), _sqlite_time(finished), kind.key_id,
                json.dumps(kind.tags), "auto", kind.reason, "b", kind.tier, "m", 0,
                kind.prompt, kind.cached, kind.completion, 40.0, 900.0, 200,
                kind.sensitivity, int(cost / UNIT), kind.tier, int(cf / UNIT), "measured", 0,
                "settled")  # fmt: skip
    return (f"r{i}", "bench", started, finished, kind.key_id, json.dumps(kind.tags), "auto",
            kind.reason, "b", kind.tier, "m", False, kind.prompt, kind.cached,
            kind.completion, 40.0, 900.0, 200, kind.sensitivity, cost, kind.tier, cf,
            "measured", Decimal(0), "settled")  # fmt: skip


COLUMNS = ("request_id", "node_id", "started_at", "finished_at", "key_id", "tags", "route",
           "reason", "backend", "tier", "model", "stream", "prompt_tokens", "cached_tokens",
           "completion_tokens", "ttft_ms", "latency_ms", "status", "sensitivity", "cost_usd",
           "cost_kind", "counterfactual_usd", "usage_source", "reserved_usd", "state")  # fmt: skip


def _sqlite_time(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def rollup_groups(n: int, days: int, table: list[Kind]) -> rollup.Groups:
    """The rollup the batcher would have kept for these rows, counted per (hour, kind)."""
    counts: dict[tuple[datetime, int], int] = {}
    for i in range(n):
        started = END - timedelta(days=days) + timedelta(seconds=days * 86400 * i / n)
        key = (started.replace(minute=0, second=0, microsecond=0), i % len(table))
        counts[key] = counts.get(key, 0) + 1
    groups: rollup.Groups = {}
    for (hour, k), count in counts.items():
        kind = table[k]
        gk: GroupKey = rollup.group_key(hour, kind.key_id, kind.tags, kind.tier,
                                        kind.sensitivity, kind.reason)  # fmt: skip
        groups.setdefault(gk, GroupSums()).add(GroupSums(
            count, kind.prompt * count, kind.cached * count, kind.completion * count,
            kind.cost * count, kind.counterfactual * count))  # fmt: skip
    return groups


def periods(days: int) -> list[dict[str, Any]]:
    start = END - timedelta(days=days)
    return [{"node_id": "bench", "started_at": start + timedelta(minutes=m),
             "ended_at": start + timedelta(minutes=m + 1), "busy_s": 30.0, "idle_s": 30.0,
             "busy_usd": Decimal("0.00001"), "idle_usd": Decimal("0.00001"),
             "power_watts": None, "profile": "cpu-node"} for m in range(days * 1440)]  # fmt: skip


async def fill(dsn: str, n: int, days: int) -> float:
    """Bulk-insert the rows, periods and rollup; returns seconds taken."""
    t0 = time.perf_counter()
    ledger = await Ledger.open(dsn)  # creates the schema
    table = kinds()
    try:
        if ledger.engine.dialect.name == "sqlite":
            await ledger.aclose()
            _fill_sqlite(make_url(dsn).database or "", n, days, table)
            ledger = await Ledger.open(dsn)
        else:
            await _fill_postgres(dsn, n, days, table)
        groups = rollup_groups(n, days, table)
        async with ledger.transaction() as conn:
            await conn.execute(hardware_periods.insert(), periods(days))
            await rollup.apply_in(conn, groups)
    finally:
        await ledger.aclose()
    return time.perf_counter() - t0


def _fill_sqlite(path: str, n: int, days: int, table: list[Kind]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    marks = ",".join("?" * len(COLUMNS))
    sql = f"INSERT INTO requests ({','.join(COLUMNS)}) VALUES ({marks})"  # noqa: S608 constants
    with conn:
        conn.executemany(sql, (row_values(i, n, days, table[i % len(table)], True)
                               for i in range(n)))  # fmt: skip
    conn.close()


async def _fill_postgres(dsn: str, n: int, days: int, table: list[Kind]) -> None:
    import asyncpg

    url = make_url(dsn)
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username,
                                 password=url.password, database=url.database)  # fmt: skip
    try:
        step = 200_000
        for lo in range(0, n, step):
            records = [row_values(i, n, days, table[i % len(table)], False)
                       for i in range(lo, min(n, lo + step))]  # fmt: skip
            await conn.copy_records_to_table("requests", records=records, columns=COLUMNS)
    finally:
        await conn.close()


def windows(days: int) -> dict[str, tuple[datetime, datetime]]:
    return {
        f"all {days}d (day buckets)": (END - timedelta(days=days), END),
        "last 24h (hour buckets)": (END - timedelta(days=1), END),
        "ragged 30d": (END - timedelta(days=min(days, 30), minutes=-17),
                       END - timedelta(minutes=43)),
    }  # fmt: skip


def time_cli(dsn: str, since: datetime, until: datetime) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `spillgate report --format json` in a child."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "spillgate", "report",
           "--dsn", dsn, "--since", since.isoformat(), "--until", until.isoformat(),
           "--format", "json"]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024


async def time_inproc(dsn: str, since: datetime, until: datetime) -> tuple[float, float]:
    """Wall seconds and tracemalloc peak (MB) of reading, building and rendering (json)."""
    from spillgate.ledger.migrations import open_engine

    models = repo_models_dir()
    book = PriceBook.load(models / "pricing.yaml")
    profile = get_profile(load_profiles(models / "hardware.yaml"), "cpu-node")
    engine = open_engine(dsn)
    try:
        tracemalloc.start()
        t0 = time.perf_counter()
        views, parts = await read_inputs(engine, since, until)
        bucket = "hour" if until - since <= timedelta(days=2) else "day"
        report = report_from_views(views, parts, since=since, until=until, bucket=bucket,
                                    price_book=book, reference_model="openai/gpt-4o-mini",
                                    hardware_profile=profile)  # fmt: skip
        render_report(report, "json")
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    finally:
        await engine.dispose()
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--dsn", help="an empty database (default: a temporary SQLite file)")
    parser.add_argument("--keep", type=Path, help="SQLite file to fill and keep")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench_report.json")
    args = parser.parse_args()
    folder = tempfile.TemporaryDirectory(prefix="bench-report-")
    path = args.keep or Path(folder.name) / "ledger.db"
    dsn = args.dsn or f"sqlite+aiosqlite:///{path}"
    fill_s = asyncio.run(fill(dsn, args.rows, args.days))
    print(f"filled {args.rows:,} rows over {args.days} days in {fill_s:.1f} s "
          f"({make_url(dsn).get_backend_name()})")  # fmt: skip
    results = []
    print(f"{'window':<28} {'cli s':>7} {'cli RSS MB':>11} {'inproc s':>9} {'py peak MB':>11}")
    for name, (since, until) in windows(args.days).items():
        cli_s, rss = time_cli(dsn, since, until)
        in_s, peak = asyncio.run(time_inproc(dsn, since, until))
        results.append({"window": name, "since": since.isoformat(), "until": until.isoformat(),
                        "cli_s": round(cli_s, 3), "cli_peak_rss_mb": round(rss, 1),
                        "inproc_s": round(in_s, 3), "inproc_py_peak_mb": round(peak, 1)})
        print(f"{name:<28} {cli_s:>7.2f} {rss:>11.1f} {in_s:>9.2f} {peak:>11.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "rows": args.rows, "days": args.days, "backend": make_url(dsn).get_backend_name(),
        "fill_s": round(fill_s, 1), "python": platform.python_version(),
        "machine": platform.machine(), "results": results,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")
    folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
