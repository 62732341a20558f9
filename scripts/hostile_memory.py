"""Memory a running node keeps after hostile, unauthenticated input (RSS from /proc).

Starts `spillgate serve` (attached to a closed engine port: nothing is loaded) with the
given interpreter, so the same script measures this checkout or another one, then:
  heads  4 connections each sending up to 64 MiB of one unfinished header field
  admin  POST /admin/keys without a key, declaring and sending up to 300 MiB
  slow   4 connections that send half a request head and then nothing
and prints the node's RSS growth after each, and what the node answered.

    .venv/bin/python scripts/hostile_memory.py [--python /other/checkout/.venv/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def node(python: str, tmp: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    config = tmp / "node.yaml"
    config.write_text(f"server: {{port: {port}}}\n"
                      f"local: [{{name: local-cpu, model: smollm2, "
                      f"base_urls: ['http://127.0.0.1:{free_port()}/v1']}}]\n"
                      f"ledger: {{dsn: 'sqlite+aiosqlite:///{tmp}/ledger.db'}}\n")
    env = {**os.environ, "SPILLGATE_ADMIN_KEY": "admin-key-for-hostile-bench-0123"}
    with (tmp / "node.log").open("wb") as log:
        proc = subprocess.Popen([python, "-m", "spillgate", "serve", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                time.sleep(0.1)
            for _ in range(20):
                httpx.get(f"http://127.0.0.1:{port}/healthz")
            yield proc.pid, port
        finally:
            proc.terminate()
            proc.wait(30)


def push(sock: socket.socket, data: bytes) -> bool:
    sock.settimeout(2)
    try:
        sock.sendall(data)
    except (TimeoutError, BrokenPipeError, ConnectionResetError):
        return False
    return True


def first_line(sock: socket.socket, timeout_s: float = 20) -> str:
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(4096)
    except (TimeoutError, ConnectionResetError) as exc:
        return f"({type(exc).__name__})"
    return data.split(b"\r\n")[0].decode(errors="replace") or "(closed, no answer)"


def heads(port: int) -> str:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    for s in socks:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: n\r\nx-filler: ")
    live = set(range(4))
    for _ in range(64):
        live = {i for i in live if push(socks[i], b"a" * MIB)}
    answers = {first_line(s, 5) for s in socks}
    for s in socks:
        s.close()
    return ", ".join(sorted(answers))


def admin(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /admin/keys HTTP/1.1\r\nhost: n\r\ncontent-type: application/json"
                  b"\r\ncontent-length: %d\r\n\r\n" % (300 * MIB))
        for _ in range(300):
            if not push(s, b" " * MIB):
                break
        return first_line(s)


def slow(port: int) -> str:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    for s in socks:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: n\r\n")
    answers = {first_line(s, 30) for s in socks}
    for s in socks:
        s.close()
    return ", ".join(sorted(answers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="interpreter of the node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, node(args.python, Path(tmp)) as (pid, port):
        base = rss(pid)
        print(f"node RSS at start: {base / MIB:.0f} MiB")
        for name, attack in (("heads", heads), ("admin", admin), ("slow", slow)):
            started = time.monotonic()
            answer = attack(port)
            print(f"{name:6s} RSS {rss(pid) / MIB:6.0f} MiB (+{(rss(pid) - base) / MIB:.0f}) "
                  f"answer: {answer}  [{time.monotonic() - started:.1f} s]")


if __name__ == "__main__":
    main()
