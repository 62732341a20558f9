"""Two gateway source trees side by side, one run: which one costs less per request.

A change on the hot path moves the gateway by tens of microseconds, less than this shared
2-core machine drifts between two runs, so old and new are measured in one run, against the
same fake upstream, in alternating rounds: direct, A, B, direct, B, A, … Each gateway is a
separate process importing its own tree (PYTHONPATH=<tree>/server); both read this
checkout's models/ and config.

Per concurrency (1, 16, 64): added p50/p99 over direct (median of the rounds), throughput as
a share of direct, the gateway's CPU µs per request (user + system, psutil, over the same
load) and its event loop's alone (the main thread's, from /proc: Linux only). `--stream`
sends streaming requests instead (the fake upstream's stream: 8 chunks 5 ms apart; with
`--burst N`, N of them in one write, so a relay that forwards what one read brings in one
write shows it).

    .venv/bin/python scripts/bench_gateway_ab.py --a /tmp/base --b . [--rounds 3] [--quick]

A tree is a directory holding server/spillgate (a `git archive <commit> server` unpacked will
do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.bench_gateway import CHAT, _cpu_s, _gateway_config, _load
from tests.support import REPO, Proc, free_port, spawn


@contextlib.contextmanager
def _upstream(tmp: Path, burst: int) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    argv = [str(REPO / "scripts" / "fake_upstream.py"), "--port", str(port),
            "--delay-ms", "20", "--chunks", "8", "--chunk-ms", "5", "--burst", str(burst)]
    with spawn(argv, tmp / "upstream.log", url, f"http://127.0.0.1:{port}/health"):
        yield url


@contextlib.contextmanager
def _gateway(tmp: Path, tree: Path, upstream: str) -> Iterator[Proc]:
    port = free_port()
    config = _gateway_config(tmp, upstream, port)
    env = {"PYTHONPATH": str((tree / "server").resolve())}
    with spawn(["-m", "spillgate", "serve", "--config", str(config)], tmp / f"gw-{port}.log",
               f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/readyz", env=env) as gw:
        yield gw


def _loop_s(pid: int) -> float:
    """CPU seconds of the gateway's main thread (the event loop), to the nanosecond: the
    process total also holds the ledger writer's thread, whose cost per row varies with how
    many rows each commit happens to batch."""
    ns = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]
    return int(ns) / 1e9


def _measured(url: str, pid: int | None, body: dict[str, Any], c: int,
              total: int) -> dict[str, float]:
    before = (_cpu_s(pid), _loop_s(pid)) if pid is not None else (0.0, 0.0)
    result = asyncio.run(_load(url, body, c, total))
    if pid is not None:
        result["cpu_us"] = 1e6 * (_cpu_s(pid) - before[0]) / total
        result["loop_us"] = 1e6 * (_loop_s(pid) - before[1]) / total
    return result


def run(a: Path, b: Path, rounds: int, quick: bool, stream: bool,
        levels: list[int], burst: int = 1) -> dict[str, Any]:
    body = {**CHAT, "stream": True} if stream else CHAT
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with _upstream(tmp, burst) as upstream, _gateway(tmp, a, upstream) as ga, \
                _gateway(tmp, b, upstream) as gb:
            targets = {"direct": (upstream, None), "a": (ga.base_url, ga.popen.pid),
                       "b": (gb.base_url, gb.popen.pid)}
            for url, _ in targets.values():  # warm-up: connections, caches
                asyncio.run(_load(url + "/chat/completions", body, 4, 100))
            for c in levels:
                total = (150 if quick else 300) if c == 1 else c * (10 if quick else 25)
                runs: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
                for i in range(rounds):
                    order = ["direct", "a", "b"] if i % 2 == 0 else ["direct", "b", "a"]
                    for kind in order:
                        url, pid = targets[kind]
                        runs[kind].append(_measured(url + "/chat/completions", pid, body, c,
                                                    total))
                out[str(c)] = {**_summary(runs), "rounds": runs}
    return out


def _summary(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    # B against A within each round (the two ran back to back), so drift between rounds
    # cancels: the figure to read when the trees differ by less than the rounds spread.
    b_minus_a = statistics.median(b["p50_ms"] - a["p50_ms"]
                                  for a, b in zip(runs["a"], runs["b"], strict=True))
    return {kind: {
        "added_p50_ms": med(kind, "p50_ms") - med("direct", "p50_ms"),
        "b_minus_a_p50_ms": b_minus_a,
        "added_p99_ms": med(kind, "p99_ms") - med("direct", "p99_ms"),
        "share": med(kind, "rps") / med("direct", "rps"),
        "cpu_us": med(kind, "cpu_us"),
        "loop_us": med(kind, "loop_us"),
    } for kind in ("a", "b")}


def render(results: dict[str, Any]) -> str:
    lines = ["| c | tree | added p50 / p99 ms | b - a p50 ms (paired) | throughput vs direct "
             "| CPU µs/request | event loop µs/request |", "|---|---|---|---|---|---|---|"]
    for c, by_tree in results.items():
        for tree in ("a", "b"):
            r = by_tree[tree]
            paired = f"{r['b_minus_a_p50_ms']:+.2f}" if tree == "b" else ""
            lines.append(f"| {c} | {tree} | {r['added_p50_ms']:.2f} / {r['added_p99_ms']:.2f} "
                         f"| {paired} | {100 * r['share']:.0f}% | {r['cpu_us']:.0f} "
                         f"| {r['loop_us']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="tree A (holds server/)")
    parser.add_argument("--b", type=Path, default=REPO, help="tree B (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer requests per round")
    parser.add_argument("--stream", action="store_true", help="streaming requests")
    parser.add_argument("--burst", type=int, default=1,
                        help="with --stream: the upstream writes this many chunks at once")
    parser.add_argument("--c", type=int, nargs="+", default=[1, 16, 64],
                        help="concurrency levels")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench_gateway_ab.json")
    args = parser.parse_args()
    results = run(args.a, args.b, args.rounds, args.quick, args.stream, args.c, args.burst)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "rounds": args.rounds,
                                    "quick": args.quick, "stream": args.stream,
                                    "burst": args.burst,
                                    "results": results}, indent=2, default=str))
    print(render(results))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
