"""The supervisor does not launch an engine onto a taken port (it would fail to bind and be
relaunched forever): it says so once, stays down, and launches when the port is free."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

import pytest

from spillgate.backends import supervisor
from spillgate.backends.supervisor import EngineSupervisor, port_in_use

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_port_in_use_sees_a_listener_and_not_a_closed_one() -> None:
    squatter = _listening()
    port = squatter.getsockname()[1]
    assert port_in_use(port)
    squatter.close()
    assert not port_in_use(port)


async def test_taken_port_is_reported_once_and_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(supervisor, "PORT_RECHECK_S", 0.05)
    squatter = _listening()
    port = squatter.getsockname()[1]
    launched = tmp_path / "launched"
    engine = EngineSupervisor(
        "local-cpu", [f"http://127.0.0.1:{port}/health"], port=port, startup_timeout_s=30,
        command=[sys.executable, "-c", f"open({str(launched)!r}, 'a').write('x')"],
    )
    with caplog.at_level(logging.INFO, logger=supervisor.__name__):
        await engine.start()
        try:
            await asyncio.sleep(0.6)  # a dozen re-checks
            assert engine.state == "down" and not engine.ready
            assert not launched.exists() and engine.restarts == 0
            squatter.close()
            for _ in range(200):
                if launched.exists():
                    break
                await asyncio.sleep(0.05)
            assert launched.exists(), "the engine was not launched once the port was free"
        finally:
            squatter.close()
            await engine.stop()
    taken = [r for r in caplog.records if "already in use" in r.getMessage()]
    assert len(taken) == 1 and f"port {port}" in taken[0].getMessage()
