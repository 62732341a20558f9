"""CPU the cost clock spends on the request path at high concurrency.

    .venv/bin/python scripts/bench_costclock.py [--seconds 60] [--lifetime 10]

Simulates (on a hand-driven clock, no sleeping) `concurrency` local requests in flight, half
plain and half streamed, arriving at random to keep that many going, each `lifetime` seconds
long on average; streams report tokens every second, every request settles with the
engine's counts (the corrections of costing/attribution.py). Prints the clock's CPU time per
second of such traffic and per request.
"""

from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal

from spillgate.costing.costclock import CostClock


def run(concurrency: int, lifetime_s: float, sim_s: float) -> tuple[int, float]:
    """(requests simulated, CPU seconds spent in the clock)."""
    now = [0.0]
    clock = CostClock(lambda _watts: Decimal("0.001"), clock=lambda: now[0])
    rng = random.Random(1)
    live: dict[str, tuple[bool, float]] = {}
    begun, next_tick = 0, 1.0
    start = time.process_time()
    while now[0] < sim_s:
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
    return begun, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--lifetime", type=float, default=10.0)
    args = parser.parse_args()
    for concurrency in (16, 64, 256):
        count, cpu = run(concurrency, args.lifetime, args.seconds)
        print(f"concurrency {concurrency:>3}: {count:>5} requests, "
              f"{cpu / args.seconds * 1000:6.1f} ms CPU per second of traffic, "
              f"{cpu / count * 1e6:6.0f} us per request")  # fmt: skip


if __name__ == "__main__":
    main()
