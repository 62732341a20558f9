"""System calls of one gateway per streamed request (strace -c), old tree against new.

A relay's cost on this machine is mostly its socket writes and the wake-ups they cause
(each write to loopback runs the TCP stack and wakes the reader), and their number per
request does not drift with the machine's load the way CPU time does. Each tree's gateway
(PYTHONPATH=<tree>/server) serves `--requests` streams from the fake upstream (8 chunks 5 ms
apart, `--burst` of them per write) while strace counts its calls, all threads included.

    .venv/bin/python scripts/stream_syscalls.py --a /tmp/base --b . [--burst 4] [--c 1]

Needs strace (and ptrace allowed).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.bench_gateway import CHAT, _load
from scripts.bench_gateway_ab import _gateway, _upstream

CALLS = ("write", "read", "epoll_pwait", "futex")


def counted(tmp: Path, tree: Path, upstream: str, c: int, requests: int) -> dict[str, float]:
    body = {**CHAT, "stream": True}
    out = tmp / f"strace-{tree.name or 'tree'}.txt"
    with _gateway(tmp, tree, upstream) as gw:
        url = gw.base_url + "/chat/completions"
        asyncio.run(_load(url, body, 4, 100))  # warm-up: connections, caches
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(gw.popen.pid), "-o", str(out)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread before the load starts
        asyncio.run(_load(url, body, c, requests))
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)
    calls: dict[str, float] = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in CALLS and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3]) / requests
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="tree A (holds server/)")
    parser.add_argument("--b", type=Path, default=Path("."), help="tree B")
    parser.add_argument("--burst", type=int, default=1, help="chunks per upstream write")
    parser.add_argument("--c", type=int, default=1, help="concurrent streams")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    print(f"| tree | {' | '.join(f'{name}/request' for name in CALLS)} |")
    print(f"|---|{'---|' * len(CALLS)}")
    with tempfile.TemporaryDirectory() as name, _upstream(Path(name), args.burst) as upstream:
        for tree in (args.a, args.b):
            calls = counted(Path(name), tree, upstream, args.c, args.requests)
            print(f"| {tree} | {' | '.join(f'{calls.get(n, 0.0):.1f}' for n in CALLS)} |")


if __name__ == "__main__":
    main()
