"""Helpers for tests that start real processes on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None,
              status: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == status:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout_s} s")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


@contextlib.contextmanager
def spawn(argv: Sequence[str], log_path: Path, base_url: str, ready_url: str,
          env: dict[str, str] | None = None, timeout_s: float = 90.0,
          ready_status: int = 200) -> Iterator[Proc]:
    log_file = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, *argv], stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, **(env or {})}, cwd=REPO,
    )
    proc = Proc(popen, log_path, base_url)
    try:
        wait_http(ready_url, timeout_s, popen, ready_status)
        yield proc
    finally:
        proc.stop()
        log_file.close()


def port_of(proc: Proc) -> int:
    """The TCP port of a process's base URL (http://127.0.0.1:PORT/v1)."""
    return int(proc.base_url.rsplit(":", 1)[1].split("/")[0])


@contextlib.contextmanager
def raw_connection(proc: Proc, timeout_s: float) -> Iterator[socket.socket]:
    """A plain TCP connection to the process, to write HTTP byte by byte; each read waits
    `timeout_s` at most."""
    sock = socket.create_connection(("127.0.0.1", port_of(proc)), timeout=timeout_s)
    try:
        yield sock
    finally:
        sock.close()


def until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the peer sends until it closes the connection; each read waits `timeout_s`
    at most (a connection left open raises TimeoutError)."""
    sock.settimeout(timeout_s)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def bundled_gguf() -> str:
    from spillgate.catalog import Catalog, resolve_gguf

    catalog = Catalog.load(REPO / "models" / "catalog.yaml")
    return str(resolve_gguf(catalog.local_model("smollm2")))


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def process_gone(proc: psutil.Process, within_s: float, poll_s: float = 0.1) -> bool:
    """Whether the process exits (or is a zombie awaiting its parent) within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(poll_s)
    return False
