"""How long a shared RPM/TPM check takes on PostgreSQL: one hot key vs many keys.

    .venv/bin/python scripts/bench_shared_limits.py --dsn postgresql+asyncpg://…/db
    .venv/bin/python scripts/bench_shared_limits.py --start-server   # a throwaway server

Runs `--checks` checks from `--tasks` concurrent tasks, first all on one key (they take
turns on the key's advisory lock), then each on its own key, and prints checks per second
and the median and 99th-percentile latency of each. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spillgate.ledger.store import Ledger
from spillgate.tenancy.shared_limits import SharedRateLimiter


async def _run(limiter: SharedRateLimiter, keys: list[str], per_task: int) -> list[float]:
    latencies: list[float] = []

    async def task(key: str) -> None:
        for _ in range(per_task):
            start = time.perf_counter()
            await limiter.check(key, 10**9, None, 100)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(task(k) for k in keys))
    return latencies


async def bench(dsn: str, checks: int, tasks: int) -> None:
    ledger = await Ledger.open(dsn, node_id="bench")
    try:
        limiter = SharedRateLimiter(ledger)
        per_task = max(1, checks // tasks)
        for label, keys in (("one key", ["hot"] * tasks),
                            ("own keys", [f"k{i}" for i in range(tasks)])):
            start = time.perf_counter()
            latencies = sorted(await _run(limiter, keys, per_task))
            elapsed = time.perf_counter() - start
            p99 = latencies[int(0.99 * (len(latencies) - 1))]
            print(f"{label:9s} {len(latencies)} checks, {tasks} tasks: "
                  f"{len(latencies) / elapsed:7.0f} checks/s, "
                  f"p50 {statistics.median(latencies) * 1000:6.2f} ms, "
                  f"p99 {p99 * 1000:6.2f} ms")
    finally:
        await ledger.aclose()


@contextlib.contextmanager
def _server() -> Iterator[str]:
    from tests.pg import find_bindir, pg_server

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries (initdb, pg_ctl); set PG_BINDIR")
    with pg_server(bindir) as dsn:
        yield dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="postgresql+asyncpg:// DSN of a scratch database")
    parser.add_argument("--start-server", action="store_true",
                        help="start a throwaway PostgreSQL on 127.0.0.1 (tests/pg.py)")
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    if args.start_server:
        with _server() as dsn:
            asyncio.run(bench(dsn, args.checks, args.tasks))
    elif args.dsn:
        asyncio.run(bench(args.dsn, args.checks, args.tasks))
    else:
        parser.error("give --dsn or --start-server")


if __name__ == "__main__":
    main()
