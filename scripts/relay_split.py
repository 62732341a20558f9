#!/usr/bin/env python3
"""Who spends the CPU of a relayed stream chunk: the gateway, the upstream and the client.

Starts the fake upstream (200 chunks 4 ms apart per stream) and a gateway in front of it,
streams `--streams` answers one at a time straight to the upstream and then through the
gateway, and prints each process's user and system CPU per chunk (psutil). With `--py-spy
FILE`, the gateway's GIL-held samples over the gateway streams go to FILE (raw format:
one stack per line, a count at the end). No llama.cpp: the cores are free, so this is the
relay's own cost; scripts/relay_cpu.py measures it beside a real engine.

    .venv/bin/python scripts/relay_split.py [--streams 15] [--py-spy var/relay.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from tests.support import free_port, spawn  # noqa: E402

from bench_gateway import CHAT, _gateway_config, _load  # noqa: E402

CHUNKS = 200


def per_chunk(url: str, procs: dict[str, psutil.Process], streams: int) -> dict[str, str]:
    before = {name: p.cpu_times() for name, p in procs.items()}
    asyncio.run(_load(url, {**CHAT, "stream": True}, 1, streams))
    out = {}
    for name, p in procs.items():
        now, was = p.cpu_times(), before[name]
        user = 1e6 * (now.user - was.user) / (streams * CHUNKS)
        system = 1e6 * (now.system - was.system) / (streams * CHUNKS)
        out[name] = f"{user:.0f} user + {system:.0f} system"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=15)
    parser.add_argument("--py-spy", type=Path, help="record the gateway's GIL-held stacks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp, port = Path(name), free_port()
        upstream = f"http://127.0.0.1:{port}/v1"
        argv = [str(REPO / "scripts" / "fake_upstream.py"), "--port", str(port), "--delay-ms",
                "5", "--chunks", str(CHUNKS), "--chunk-ms", "4"]
        with spawn(argv, tmp / "upstream.log", upstream, f"http://127.0.0.1:{port}/health") as up:
            gport = free_port()
            config = _gateway_config(tmp, upstream, gport)
            with spawn(["-m", "spillgate", "serve", "--config", str(config)], tmp / "gw.log",
                       f"http://127.0.0.1:{gport}/v1", f"http://127.0.0.1:{gport}/readyz") as gw:
                procs = {"gateway": psutil.Process(gw.popen.pid),
                         "upstream": psutil.Process(up.popen.pid), "client": psutil.Process()}
                asyncio.run(_load(gw.base_url + "/chat/completions", CHAT, 1, 5))  # warm-up
                direct = per_chunk(upstream + "/chat/completions", procs, args.streams)
                spy = None
                if args.py_spy:
                    spy = subprocess.Popen([str(REPO / ".venv" / "bin" / "py-spy"), "record",
                                            "--pid", str(gw.popen.pid), "--gil", "--nonblocking",
                                            "--rate", "1000", "--format", "raw",
                                            "-o", str(args.py_spy)])
                    time.sleep(1)
                relayed = per_chunk(gw.base_url + "/chat/completions", procs, args.streams)
                if spy is not None:
                    spy.terminate()
                    spy.wait()
    print("| process | CPU µs per chunk, direct | through the gateway |\n|---|---|---|")
    for name in ("gateway", "upstream", "client"):
        print(f"| {name} | {direct[name]} | {relayed[name]} |")


if __name__ == "__main__":
    main()
