#!/usr/bin/env python3
"""What one extra process hop costs on this machine: the loopback round trip between two
Python processes (uvloop, a 300-byte message echoed back), back to back and with both
processes asleep 20 ms between messages, as at one client against a 20 ms upstream.

A proxy at one client adds a hop each way: the client wakes the proxy, the proxy wakes the
client, and both halves of that round trip pay for waking a sleeping process (on a VM, a
halted virtual CPU). That cost is the machine's, not the proxy's code; it bounds from below
what any proxy adds at concurrency 1 here (bench_gateway.py part e prints it beside the
added latency).

    .venv/bin/python scripts/wake_rtt.py [--count 300] [--out var/wake_rtt.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

MESSAGE = b"x" * 300


async def _echo(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _round_trips(port: int, count: int, gap_s: float) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times: list[float] = []
    for _ in range(count):
        if gap_s:
            await asyncio.sleep(gap_s)
        began = time.perf_counter()
        writer.write(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            got += len(await reader.read(65536))
        times.append(time.perf_counter() - began)
    writer.close()
    times.sort()
    return {"p50_us": 1e6 * times[len(times) // 2],
            "p99_us": 1e6 * times[min(len(times) - 1, int(len(times) * 0.99))]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(count: int = 300) -> dict[str, Any]:
    """Round trips to an echo process: back to back, and 20 ms apart."""
    port = _free_port()
    echo = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return {"back_to_back": uvloop.run(_round_trips(port, count, 0.0)),
                "after_20ms_asleep": uvloop.run(_round_trips(port, count, 0.02))}
    finally:
        echo.kill()
        echo.wait()


def render(result: dict[str, Any]) -> str:
    lines = ["| loopback round trip between two processes | p50 µs | p99 µs |", "|---|---|---|"]
    for name, r in result.items():
        lines.append(f"| {name.replace('_', ' ')} | {r['p50_us']:.0f} | {r['p99_us']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("var") / "wake_rtt.json")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_echo(args.serve))
        return
    result = measure(args.count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
