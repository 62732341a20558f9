#!/usr/bin/env python3
"""Tokens/s of identical bursts in a row, straight to the llama.cpp engine, round by round.

Each round sends C identical greedy streaming requests at once and times them to the last
one's end: the "burst" of `bench_gateway.py` part (b), without the gateway. Medians hide
what this shows: a round's speed can depend on the one before it. Before the scheduler sent
rows sorted by slot, slots came back off a stack in reverse, so every other round's batch
reached llama.cpp as 3,2,1,0 and ran as four passes (scripts/batch_order.py): rounds
alternated fast, slow, fast. `--engine LABEL=ARGS` as in bench_engine.py (`--src DIR` runs
another checkout's server/ tree), variants one after the other.

    .venv/bin/python scripts/burst_rounds.py --rounds 8 --engine 'before=--src /tmp/old/server' \
        --engine 'after=' [--streams 4] [--out var/burst_rounds.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_engine  # noqa: E402
from bench_gateway import _tokens as burst  # noqa: E402  (the same burst as its part b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", dest="variants", metavar="LABEL=ARGS")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "burst_rounds.json")
    args = parser.parse_args()
    # what bench_engine.engine() reads from its own arguments
    engine_args = argparse.Namespace(url=None, model_path=None, max_batch=4, n_threads=None)
    results = {}
    for spec in args.variants or ["engine="]:
        label = bench_engine.split_variant(spec)[0]
        with bench_engine.engine(engine_args, spec) as (base, _pid):
            url = base + "/chat/completions"
            asyncio.run(burst(url, args.streams, 1, model="bench"))  # warm-up
            rounds = [round(asyncio.run(burst(url, args.streams, 1, model="bench")), 1)
                      for _ in range(args.rounds)]
        results[label] = rounds
        odd, even = rounds[0::2], rounds[1::2]
        print(f"{label:>10}: " + " ".join(f"{r:6.1f}" for r in rounds)
              + f"   median of rounds 1,3,5..: {statistics.median(odd):.1f}"
              + f"  2,4,6..: {statistics.median(even):.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"streams": args.streams, "rounds": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
