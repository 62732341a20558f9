"""What the cost ledger adds to a request, and how fast its write-behind batcher drains.

    .venv/bin/python scripts/bench_ledger.py [--requests 20000] [--dsn postgresql+asyncpg://…]

Measures, on a fresh SQLite file (or the given DSN, whose tables must be empty of these ids):
- hot path: the time `begin` + `finish` take on the request path (both only enqueue), at
  concurrency 1 and with 64 concurrent simulated requests; p50/p99 in microseconds.
- sustained ops/s: the same runs end to end (enqueue, batcher commits on the same event
  loop, final flush), i.e. what the loop can carry including the batcher's own CPU.
- batcher throughput: rows/s committed (begin + finish each) when draining a backlog.
- reserve + settle: one paid reservation round trip, sequential; ms.
Prints a table and writes var/bench_ledger.json. The gateway's budget is ~1 ms per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from spillgate.ledger.store import Ledger, RequestOutcome, RequestStart
from spillgate.tenancy.keys import create_key

ROOT = Path(__file__).resolve().parents[1]


def _pair(i: int, tag: str) -> tuple[RequestStart, RequestOutcome]:
    now = datetime.now(UTC)
    start = RequestStart(f"{tag}-{i}", now, key_id="key-bench", tags={"project": "bench"},
                         route="auto", reason="local_ok", backend="local-cpu",
                         model="smollm2", stream=True)
    return start, RequestOutcome(start, now, 200, 512, 0, 128, 40.0, 900.0,
                                 Decimal("0.0000123456"), Decimal("0.0001"))


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def hot_path(ledger: Ledger, n: int, concurrency: int, tag: str) -> dict[str, float]:
    """Per-request time spent inside begin() + finish(), in microseconds."""
    samples: list[float] = []
    pairs = [_pair(i, tag) for i in range(n)]

    async def one(worker: int) -> None:
        for i in range(worker, n, concurrency):
            start, outcome = pairs[i]
            t0 = time.perf_counter_ns()
            ledger.begin(start)
            t1 = time.perf_counter_ns()
            await asyncio.sleep(0)  # the request does its work
            t2 = time.perf_counter_ns()
            ledger.finish(outcome)
            samples.append((t1 - t0 + time.perf_counter_ns() - t2) / 1000)

    wall = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(concurrency)))
    await ledger.flush()
    wall = time.perf_counter() - wall
    return {"p50_us": _pct(samples, 0.5), "p99_us": _pct(samples, 0.99),
            "mean_us": statistics.fmean(samples), "ops_per_s_sustained": 2 * n / wall}


async def batcher_throughput(ledger: Ledger, n: int) -> dict[str, float]:
    """Queue n begin+finish pairs (ops; a pair in one batch is one upsert), then time the
    flush that commits them all."""
    for i in range(n):
        start, outcome = _pair(i, "drain")
        ledger.begin(start)
        ledger.finish(outcome)
    t0 = time.perf_counter()
    await ledger.flush()
    elapsed = time.perf_counter() - t0
    return {"ops": 2 * n, "seconds": elapsed, "ops_per_s": 2 * n / elapsed}


async def opened_rows_throughput(ledger: Ledger, n: int) -> dict[str, float]:
    """Open rows only (no collapsing of begin+finish): the worst case for the batcher."""
    for i in range(n):
        ledger.begin(_pair(i, "open")[0])
    t0 = time.perf_counter()
    await ledger.flush()
    elapsed = time.perf_counter() - t0
    return {"rows": n, "seconds": elapsed, "rows_per_s": n / elapsed}


async def reserve_settle(ledger: Ledger, n: int) -> dict[str, float]:
    key, _ = await create_key(ledger, "bench", daily_budget_usd=Decimal(10**6),
                              monthly_budget_usd=Decimal(10**7))
    await ledger.reserve(key.key_id, "warm", Decimal("0.01"))
    reserve, settle = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await ledger.reserve(key.key_id, f"res-{i}", Decimal("0.01"))
        t1 = time.perf_counter()
        await ledger.settle(key.key_id, f"res-{i}", Decimal("0.01"), Decimal("0.004"))
        reserve.append((t1 - t0) * 1000)
        settle.append((time.perf_counter() - t1) * 1000)
    return {"reserve_p50_ms": _pct(reserve, 0.5), "reserve_p99_ms": _pct(reserve, 0.99),
            "settle_p50_ms": _pct(settle, 0.5), "settle_p99_ms": _pct(settle, 0.99)}


async def run(dsn: str, n: int) -> dict[str, Any]:
    ledger = await Ledger.open(dsn, node_id="bench")
    try:
        return {
            "hot_path_c1": await hot_path(ledger, n, 1, "c1"),
            "hot_path_c64": await hot_path(ledger, n, 64, "c64"),
            "batcher_begin_finish": await batcher_throughput(ledger, n),
            "batcher_open_only": await opened_rows_throughput(ledger, n),
            "reserve_settle": await reserve_settle(ledger, 300),
        }
    finally:
        await ledger.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--dsn", help="ledger DSN (default: a fresh SQLite file)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench_ledger.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dsn = args.dsn or f"sqlite+aiosqlite:///{tmp}/bench.db"
        results = asyncio.run(run(dsn, args.requests))
    print(f"{'measure':<34}{'value':>14}")
    for section, values in results.items():
        for name, value in values.items():
            print(f"{section + '.' + name:<34}{value:>14.2f}")
    report = {"dsn_kind": dsn.split(":", 1)[0], "requests": args.requests,
              "python": sys.version.split()[0], "machine": platform.machine(),
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
