#!/usr/bin/env python3
"""What holds the gateway's event loop under load: its lag, the garbage collector, the ledger.

Starts the 20 ms fake upstream and a gateway whose interpreter loads a `sitecustomize` from a
temporary folder (as scripts/c1_path.py does). In the gateway process only, it records:
  - the loop's lag: a callback asks to run every 1 ms and notes how late it ran (one turn of
    the loop: every ready callback and the I/O of that turn), from the first request on;
  - every garbage collection (gc.callbacks): generation and pause;
  - every batch the ledger writer thread writes: rows, wall time and the thread's CPU time.
Then one client warms up (500 requests at c = 16) and sends `--requests` at `--c`; the table
covers the measured load only (collections during start-up are counted apart).

    .venv/bin/python scripts/loop_stalls.py [--c 64] [--requests 6000]
        [--out var/loop_stalls.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path

import bench_gateway  # scripts/, beside this file

PROBES = '''
import atexit, asyncio, gc, json, os, time
pc = time.perf_counter
lags, collections, writes, began = [], [], [], {}
def on_gc(phase, info):
    if phase == "start":
        began["gc"] = pc()
    else:
        collections.append((time.time(), info["generation"], pc() - began.get("gc", pc())))
gc.callbacks.append(on_gc)
def lag(loop, due):
    lags.append((time.time(), pc() - due))
    loop.call_later(0.001, lag, loop, pc() + 0.001)
import spillgate.api.hot as hot
_answer = hot.HotRoute.answer  # both of the node's ways into a hot route call it
async def answer(self, headers, channel, rid):
    if "lag" not in began:
        began["lag"] = True
        asyncio.get_running_loop().call_later(0.001, lag, asyncio.get_running_loop(),
                                              pc() + 0.001)
    return await _answer(self, headers, channel, rid)
hot.HotRoute.answer = answer
import spillgate.ledger.direct as direct
_write = direct.DirectWriter.write
def write(self, batch):
    wall, cpu = pc(), time.thread_time()
    try:
        return _write(self, batch)
    finally:
        writes.append((time.time(), len(batch), pc() - wall, time.thread_time() - cpu))
direct.DirectWriter.write = write
def dump():
    with open(os.environ["SG_STALLS"], "w") as out:
        json.dump({"lags": lags, "collections": collections, "writes": writes}, out)
atexit.register(dump)
'''


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    at = lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99),
            "max_ms": 1000 * ordered[-1]}


def summarize(raw: dict[str, list[list[float]]], start: float, end: float) -> dict[str, object]:
    during = lambda rows: [r for r in rows if start <= r[0] <= end]  # noqa: E731
    lags = [lag for _, lag in during(raw["lags"])]
    by_generation = {}
    for generation in (0, 1, 2):
        pauses = [p for _, g, p in during(raw["collections"]) if g == generation]
        before = [p for t, g, p in raw["collections"] if g == generation and t < start]
        by_generation[str(generation)] = _quantiles(pauses) | {
            "total_ms": 1000 * sum(pauses), "before_load": len(before)}
    writes = during(raw["writes"])
    return {
        "seconds": end - start,
        "loop_lag": _quantiles(lags) | {"lagging_over_2ms_s": sum(x for x in lags if x > 0.002)},
        "gc": by_generation,
        "ledger_writer": {"batches": len(writes), "rows": sum(int(w[1]) for w in writes),
                          "cpu_s": sum(w[3] for w in writes),
                          "wall_median_ms": 1000 * statistics.median(w[2] for w in writes)
                          if writes else None},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=int, default=64)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "var" / "loop_stalls.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        raw_path = tmp / "stalls.json"
        up, upstream = bench_gateway._upstream(tmp)
        with up, bench_gateway.probed_gateway(tmp, upstream, PROBES,
                                              SG_STALLS=str(raw_path)) as gw:
            url = gw.base_url + "/chat/completions"
            asyncio.run(bench_gateway._load(url, bench_gateway.CHAT, 16, 500))
            start = time.time()
            load = asyncio.run(bench_gateway._load(url, bench_gateway.CHAT, args.c, args.requests))
            end = time.time()
            gw.stop(signal.SIGINT)  # uvicorn re-raises SIGTERM, which skips atexit
        result = {"c": args.c, "requests": args.requests,
                  "load": {k: v for k, v in load.items() if not isinstance(v, list)}}
        result |= summarize(json.loads(raw_path.read_text()), start, end)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    lag, writer = result["loop_lag"], result["ledger_writer"]
    print(f"c = {args.c}: p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms, "
          f"{load['rps']:.0f} requests/s over {end - start:.2f} s")
    print("| what | n | p50 ms | p90 ms | p99 ms | max ms | total |\n|---|---|---|---|---|---|---|")
    print(f"| loop lag (1 ms probe) | {lag['n']} | {lag['p50_ms']:.2f} | {lag['p90_ms']:.2f} | "
          f"{lag['p99_ms']:.2f} | {lag['max_ms']:.2f} | {lag['lagging_over_2ms_s']:.2f} s "
          "late by over 2 ms |")
    for generation, pauses in result["gc"].items():  # type: ignore[attr-defined]
        if pauses.get("n"):
            print(f"| gc generation {generation} | {pauses['n']} | {pauses['p50_ms']:.2f} | "
                  f"{pauses['p90_ms']:.2f} | {pauses['p99_ms']:.2f} | {pauses['max_ms']:.2f} | "
                  f"{pauses['total_ms']:.0f} ms |")
        else:
            print(f"| gc generation {generation} | 0 | | | | | "
                  f"({pauses['before_load']} before the load) |")
    print(f"| ledger writer | {writer['batches']} batches, {writer['rows']} rows | | | | | "
          f"{writer['cpu_s']:.2f} s CPU |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
