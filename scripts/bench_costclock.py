"""CPU the cost clock spends per request at 1 to 256 in flight: the clock against its
pre-change algorithm (tests/reference_costclock.py), side by side in one run.

    .venv/bin/python scripts/bench_costclock.py [--rounds 3] [--requests 3000] [--out FILE]

Two shapes, both on a hand-driven clock (no sleeping), old and new alternating in each round
(the median of the rounds is printed):
  - gateway: `concurrency` plain requests in flight, each 20-30 ms long, a new one dispatched
    as soon as one answers and settles with the engine's count (the shape of
    scripts/bench_gateway.py against its 20 ms fake upstream), a tick a second;
  - mixed: half plain, half streamed, each ~10 s long, streams reporting tokens every
    second and settling with the engine's prompt count (the corrections of
    costing/attribution.py).
Prints a table of µs of clock CPU per request and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reference_costclock import CostClock as ReferenceClock

from spillgate.costing.costclock import CostClock


class Clock(Protocol):
    def begin(self, request_id: str, *, opaque: bool = ..., prompt_estimate: int = ...) -> None:
        ...

    def add_tokens(self, request_id: str, n: int, *, prompt_estimate: int = ...) -> None: ...

    def finish(self, request_id: str, *, work_tokens: int | None = ...,
               prompt_tokens: int | None = ...) -> Decimal: ...  # fmt: skip

    def tick(self, now: float | None = ...) -> None: ...


Factory = Callable[[Callable[[], float]], Clock]
CLOCKS: dict[str, Factory] = {
    "old": lambda now: ReferenceClock(lambda _w: Decimal("0.001"), clock=now),
    "new": lambda now: CostClock(lambda _w: Decimal("0.001"), clock=now),
}


def gateway(make: Factory, concurrency: int, requests: int) -> float:
    """µs of clock CPU per request: plain requests 20-30 ms long, `concurrency` in flight."""
    now = [0.0]
    clock, rng = make(lambda: now[0]), random.Random(1)
    ends: list[tuple[float, str]] = []
    for i in range(concurrency):  # warm-up: the first ones arrive 0.3 ms apart
        now[0] += 0.0003
        clock.begin(f"w{i}", opaque=True, prompt_estimate=200)
        heapq.heappush(ends, (now[0] + rng.uniform(0.02, 0.03), f"w{i}"))
    next_tick = 1.0
    start = time.process_time()
    for i in range(requests):
        end, rid = heapq.heappop(ends)
        now[0] = end
        if next_tick <= end:
            clock.tick(next_tick)
            next_tick += 1.0
        clock.finish(rid, work_tokens=rng.randrange(100, 800))
        now[0] += 0.0002  # the next request's routing and dispatch
        clock.begin(f"r{i}", opaque=True, prompt_estimate=200)
        heapq.heappush(ends, (now[0] + rng.uniform(0.02, 0.03), f"r{i}"))
    return (time.process_time() - start) / requests * 1e6


def mixed(make: Factory, concurrency: int, requests: int, lifetime_s: float = 10.0) -> float:
    """µs of clock CPU per request: half plain, half streamed, ~`lifetime_s` long each."""
    now = [0.0]
    clock, rng = make(lambda: now[0]), random.Random(1)
    live: dict[str, tuple[bool, float]] = {}
    begun, next_tick = 0, 1.0
    start = time.process_time()
    while begun < requests:
        now[0] += rng.expovariate(concurrency / lifetime_s)
        while next_tick <= now[0]:
            clock.tick(next_tick)
            next_tick += 1.0
            for rid, (plain, _) in live.items():
                if not plain:
                    clock.add_tokens(rid, 20, prompt_estimate=200)
        rid, plain = f"r{begun}", begun % 2 == 0
        begun += 1
        clock.begin(rid, opaque=plain, prompt_estimate=200)
        live[rid] = (plain, now[0] + rng.uniform(0.5, 1.5) * lifetime_s)
        for done in [r for r, (_, end) in live.items() if end <= now[0]]:
            was_plain, _ = live.pop(done)
            clock.finish(done, work_tokens=600 if was_plain else None,
                         prompt_tokens=None if was_plain else 210)  # fmt: skip
    return (time.process_time() - start) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per shape and clock")
    parser.add_argument("--out", type=Path, default=Path("var/bench_costclock.json"))
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    print(f"{'shape':<8} {'in flight':>9} {'old us/req':>11} {'new us/req':>11} {'old/new':>8}")
    for shape in (gateway, mixed):
        for concurrency in (1, 16, 64, 256):
            runs: dict[str, list[float]] = {"old": [], "new": []}
            for r in range(args.rounds):  # alternating: old, new, new, old, ...
                for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    runs[name].append(shape(CLOCKS[name], concurrency, args.requests))
            old, new = (statistics.median(runs[n]) for n in ("old", "new"))
            print(f"{shape.__name__:<8} {concurrency:>9} {old:>11.1f} {new:>11.1f} "
                  f"{old / new:>7.2f}x")  # fmt: skip
            results.append({"shape": shape.__name__, "concurrency": concurrency,
                            "old_us_per_request": runs["old"],
                            "new_us_per_request": runs["new"]})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": args.rounds, "requests": args.requests,
                                    "results": results}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
