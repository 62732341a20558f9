"""Seconds from a gateway's SIGKILL to the exit of the llama.cpp engine it supervised.

Starts `spillgate serve` with a launched engine (bundled SmolLM2) on free loopback ports,
waits until it is ready, kills the gateway with SIGKILL (as the OOM killer does), and
times how long the engine lives on. Repeats `--rounds` times.

    .venv/bin/python scripts/engine_exit_time.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def one_round(tmp: Path) -> float:
    port = free_port()
    config = tmp / "node.yaml"
    config.write_text(f"server: {{port: {port}}}\n"
                      f"local: [{{name: local-cpu, model: smollm2, port: {free_port()}, "
                      f"max_batch: 1}}]\n"
                      f"ledger: {{dsn: 'sqlite+aiosqlite:///{tmp}/ledger.db'}}\n")
    node = subprocess.Popen([sys.executable, "-m", "spillgate", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        time.sleep(0.2)
    engine = next(c for c in psutil.Process(node.pid).children()
                  if "spillgate.engines.llamacpp" in " ".join(c.cmdline()))
    started = time.monotonic()
    os.kill(node.pid, signal.SIGKILL)
    node.wait()
    while time.monotonic() - started < 60:
        try:
            if engine.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    else:
        engine.kill()
        return float("inf")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"round {i + 1}: engine gone {one_round(Path(tmp)):.2f} s after the "
                  "gateway's SIGKILL")


if __name__ == "__main__":
    main()
