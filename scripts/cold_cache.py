#!/usr/bin/env python3
"""The gateway's per-request steps warm, after an idle gap, and with the CPU caches emptied.

At one client the gateway runs about a millisecond of work, then waits 20 ms for the
upstream. `scripts/c1_path.py --cpu` shows its steps taking many times their warm time,
in CPU time (running, not waiting for a core). This script reproduces that outside the
gateway, in one process, on the loop thread's CPU clock (`time.thread_time_ns`):

  warm        each step run back to back;
  after idle  each run after sleeping `--idle-ms` (20: the benchmark's upstream delay);
  evicted     each run after writing one byte in every 64 of a `--evict-mib` buffer (the
              CPU caches emptied on purpose: if this matches "after idle", lost cache
              contents explain the slowdown);

then all the steps together (one request's share of them) after gaps of `--gaps` ms, slept
or spent spinning on the CPU. Medians, as a table and JSON. The `nothing` row is the
clock's own cost.

    .venv/bin/python scripts/cold_cache.py [--rounds 200] [--idle-ms 20] [--evict-mib 64]
        [--gaps 0 0.1 0.3 1 3 10 20] [--out var/cold_cache.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson

from spillgate.costing.costclock import CostClock
from spillgate.protocol import admit
from spillgate.routing.sensitivity import SensitivityDetector
from spillgate.routing.sensitivity_walk import body_texts
from spillgate.settings import ServerSettings

Step = Callable[[], object]


def _steps(raw: bytes) -> dict[str, Step]:
    limits = ServerSettings()
    detector = SensitivityDetector()
    clock = CostClock(lambda watts: Decimal("0.000277777777777777777777778"))
    body = orjson.loads(raw)
    ids = itertools.count()

    def cost_clock() -> object:  # a plain local request: begin, then settle
        rid = f"r{next(ids)}"
        clock.begin(rid, opaque=True, prompt_estimate=len(raw) // 4)
        return clock.finish(rid, work_tokens=40)

    return {
        "nothing": lambda: None,
        "orjson parse of the body": lambda: orjson.loads(raw),
        "admit (parse, shape checks, pydantic)": lambda: admit("chat/completions", raw, limits),
        "sensitivity scan of the body": lambda: detector.scan(body_texts(body).texts),
        "cost clock begin + finish": cost_clock,
    }


def _cpu_us(step: Step, before: Callable[[], None], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        before()
        began = time.thread_time_ns()
        step()
        samples.append(time.thread_time_ns() - began)
    return statistics.median(samples) / 1000


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(body: dict[str, object], rounds: int, idle_ms: float, evict_mib: int,
            gaps: list[float]) -> dict[str, object]:
    """The steps on `body` (a chat request, as a client encodes it)."""
    buffer = memoryview(bytearray(evict_mib * 1024 * 1024))
    ones = b"\x01" * len(buffer[::64])

    def evict() -> None:
        buffer[::64] = ones  # every cache line of the buffer written

    steps = _steps(orjson.dumps(body))
    per_step = {
        name: {"warm_us": _cpu_us(step, lambda: None, rounds),
               "after_idle_us": _cpu_us(step, lambda: time.sleep(idle_ms / 1000), rounds),
               "evicted_us": _cpu_us(step, evict, rounds)}
        for name, step in steps.items()
    }
    work = [step for name, step in steps.items() if name != "nothing"]

    def request() -> None:
        for step in work:
            step()

    by_gap = {
        str(gap): {"slept_us": _cpu_us(request, lambda g=gap: time.sleep(g / 1000), rounds),
                   "spun_us": _cpu_us(request, lambda g=gap: _spin(g / 1000), rounds)}
        for gap in gaps
    }
    return {"rounds": rounds, "idle_ms": idle_ms, "evict_mib": evict_mib,
            "steps": per_step, "all_steps_after_gap_ms": by_gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--idle-ms", type=float, default=20.0)
    parser.add_argument("--evict-mib", type=int, default=64)
    parser.add_argument("--gaps", type=float, nargs="+", default=[0, 0.1, 0.3, 1, 3, 10, 20])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "var" / "cold_cache.json")
    args = parser.parse_args()
    from bench_gateway import CHAT  # the benchmark's body (bench_gateway imports this module)

    result = measure(CHAT, args.rounds, args.idle_ms, args.evict_mib, args.gaps)
    print(f"| step | warm µs | after {args.idle_ms:g} ms idle | evicted | idle / warm |")
    print("|---|---|---|---|---|")
    for name, r in result["steps"].items():  # type: ignore[attr-defined]
        ratio = r["after_idle_us"] / r["warm_us"]
        print(f"| {name} | {r['warm_us']:.1f} | {r['after_idle_us']:.1f} | "
              f"{r['evicted_us']:.1f} | {ratio:.1f}x |")
    print("\n| gap before the request's steps, ms | slept µs | spun µs |\n|---|---|---|")
    for gap, r in result["all_steps_after_gap_ms"].items():  # type: ignore[attr-defined]
        print(f"| {gap} | {r['slept_us']:.1f} | {r['spun_us']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
