"""Keeps a local engine serving: launch (single-node mode) or attach (Kubernetes), health-check,
restart with exponential backoff.

The gateway never waits on this: it reads `state` when routing, so while an engine restarts
local-only requests get a clear 503 and `auto` traffic spills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import Literal

import aiohttp

from spillgate.engines.lifeline import PARENT_PID_ENV
from spillgate.tasks import cancel_and_wait

log = logging.getLogger(__name__)
EngineState = Literal["starting", "ready", "restarting", "down"]
PORT_RECHECK_S = 5.0


class EngineSupervisor:
    def __init__(
        self,
        name: str,
        health_urls: Sequence[str],
        *,
        command: Sequence[str] | None = None,
        port: int | None = None,

        unsupported: frozenset[str] = frozenset(),
        startup_timeout_s: float = 120.0,
        check_interval_s: float = 1.0,
        failures_before_restart: int = 3,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.health_urls = list(health_urls)
        self.command = list(command) if command else None
        self.port = port  # the launched engine's port, checked free before each launch
        self.state: EngineState = "starting"
        self.restarts = 0
        # Request features the engine cannot serve: given (vLLM: from the catalog), or declared
        # by the engine in its /health body (our llama.cpp engine: {"unsupported": [...]}).
        self.unsupported = unsupported
        self._startup_timeout_s = startup_timeout_s
        self._interval = check_interval_s
        self._failures_before_restart = failures_before_restart
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def set_health_urls(self, urls: Sequence[str]) -> None:
        """Attach mode with DNS discovery: probe the pods the name resolves to now."""
        self.health_urls = list(urls)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")

    async def wait_ready(self, timeout_s: float) -> bool:
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            if self.ready:
                return True
            await asyncio.sleep(0.1)
        return self.ready

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._terminate()
        if self._session:
            await self._session.close()
        self.state = "down"

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            if self.command:
                await self._wait_for_port()
                await self._spawn()
            healthy_once = await self._watch()
            # The engine died or stopped answering: restart (managed) or keep probing.
            self.state = "restarting"
            await self._terminate()
            backoff = 1.0 if healthy_once else min(backoff * 2, self._max_backoff_s)
            self.restarts += 1
            log.warning("engine %s unavailable; retrying in %.0f s", self.name, backoff)
            await asyncio.sleep(backoff)

    async def _watch(self) -> bool:
        """Probe until the engine fails for good; True if it was ever healthy."""
        started, failures, healthy_once = self._clock(), 0, False
        while True:
            if self._process and self._process.returncode is not None:
                log.error("engine %s exited with %s", self.name, self._process.returncode)
                return healthy_once
            if await self._healthy():
                failures, healthy_once = 0, True
                if self.state != "ready":
                    log.info("engine %s is ready", self.name)
                self.state = "ready"
            elif healthy_once:
                failures += 1
                if failures >= self._failures_before_restart:
                    return True
            elif self._clock() - started > self._startup_timeout_s:
                log.error("engine %s not ready after %.0f s", self.name,
                          self._startup_timeout_s)
                return False
            await self._pause(self._interval if healthy_once else 0.25)

    async def _pause(self, seconds: float) -> None:
        """Sleep between probes, but wake at once if the managed engine exits: readiness
        must drop the moment the process dies, not at the next probe."""
        process = self._process
        if process is None or process.returncode is not None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), seconds)

    async def _healthy(self) -> bool:
        if self._session is None:
            return False
        for url in self.health_urls:
            try:
                async with self._session.get(url) as response:
                    if response.status == 200:
                        self._read_declaration(await response.read())
                        return True
            except (TimeoutError, aiohttp.ClientError):
                continue
        return False

    async def _wait_for_port(self) -> None:
        """Launching onto a taken port would only fail and restart, over and over: say so
        once, stay down, and launch when the port is free again."""
        if self.port is None or not port_in_use(self.port):
            return
        log.error("engine %s: %s", self.name, port_taken_message(self.port))
        self.state = "down"
        while True:  # a port has no event to await: poll it, rarely
            await asyncio.sleep(PORT_RECHECK_S)
            if not port_in_use(self.port):
                break
        log.info("engine %s: port %d is free again", self.name, self.port)
        self.state = "starting"

    def _read_declaration(self, body: bytes) -> None:
        try:
            declared = json.loads(body) if body.strip() else None
        except ValueError:
            return
        if isinstance(declared, dict) and isinstance(declared.get("unsupported"), list):
            self.unsupported = frozenset(str(f) for f in declared["unsupported"])

    async def _spawn(self) -> None:
        if self.command is None:
            return
        if self.state != "starting":
            self.state = "restarting"
        log.info("starting engine %s", self.name)
        # The engine holds the read end of its stdin as a lifeline and learns our pid, so it
        # stops when this process dies by any signal (spillgate.engines.lifeline).
        self._process = await asyncio.create_subprocess_exec(
            *self.command, start_new_session=True, stdin=asyncio.subprocess.PIPE,
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        )

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            await self._stop_process(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()  # the lifeline: closed last, the engine is gone

    async def _stop_process(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listening socket holds `port`: the test the engine's own bind would fail
    (with SO_REUSEADDR, as uvicorn binds, a closing connection does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def port_taken_message(port: int) -> str:
    return (f"port {port} is already in use by another process, perhaps an engine left "
            f"running by an earlier gateway (see `ss -ltnp 'sport = :{port}'`); stop it or "
            "set local[].port to a free port")
