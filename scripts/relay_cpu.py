#!/usr/bin/env python3
"""The gateway's CPU per relayed chunk of a real llama.cpp stream: two source trees side by side.

For each tree in turn (alternating order per cycle), starts the bundled engine and a gateway
in front of it, both importing that tree (PYTHONPATH=<tree>/server), streams `--streams`
96-token answers one at a time through the gateway, and divides the gateway process's CPU
time (user + system, psutil) by the tokens relayed (one chunk each). One stream at a time is
where the relay competes hardest with llama.cpp's threads for this machine's two cores.

    .venv/bin/python scripts/relay_cpu.py --a /tmp/old --b . [--cycles 4] [--streams 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from tests.support import bundled_gguf, free_port, spawn  # noqa: E402

import bench_gateway  # noqa: E402


@contextlib.contextmanager
def _tree(tree: Path) -> Iterator[None]:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree.resolve() / "server")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved


def one_run(tree: Path, streams: int) -> dict[str, float]:
    with _tree(tree), tempfile.TemporaryDirectory() as name:
        tmp, port = Path(name), free_port()
        engine = f"http://127.0.0.1:{port}/v1"
        argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
                "--served-name", "smollm2", "--port", str(port), "--max-batch", "4"]
        with spawn(argv, tmp / "engine.log", engine, f"http://127.0.0.1:{port}/health"), \
                bench_gateway._start_gateway(tmp, engine) as gw:
            url = gw.base_url + "/chat/completions"
            asyncio.run(bench_gateway._tokens(url, 1, 2))  # warm-up
            gateway = psutil.Process(gw.popen.pid)
            before, began = gateway.cpu_times(), time.perf_counter()
            tokens_per_s = asyncio.run(bench_gateway._tokens(url, 1, streams))
            after, took = gateway.cpu_times(), time.perf_counter() - began
    cpu_s = (after.user - before.user) + (after.system - before.system)
    return {"cpu_us_per_chunk": 1e6 * cpu_s / (tokens_per_s * took),
            "tokens_per_s": tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="tree A (holds server/)")
    parser.add_argument("--b", type=Path, default=REPO, help="tree B (default: this checkout)")
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "relay_cpu.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    for cycle in range(args.cycles):
        for label in ("a", "b") if cycle % 2 == 0 else ("b", "a"):
            runs[label].append(one_run(getattr(args, label), args.streams))
    summary = {label: {key: statistics.median(r[key] for r in rows)
                       for key in ("cpu_us_per_chunk", "tokens_per_s")}
               for label, rows in runs.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "runs": runs,
                                    "median": summary}, indent=2))
    print("| tree | gateway CPU µs per relayed chunk | tokens/s |\n|---|---|---|")
    for label, figures in summary.items():
        print(f"| {label} | {figures['cpu_us_per_chunk']:.0f} | {figures['tokens_per_s']:.1f} |")
    print(f"(medians of {args.cycles} cycles; {args.streams} streams each)\nwrote {args.out}")


if __name__ == "__main__":
    main()
