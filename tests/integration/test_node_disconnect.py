"""A client that leaves a NON-stream request frees the engine too (issue 10, scope 4).

Streams stop when writing to the departed client fails; a non-stream request writes nothing
until the end, so the gateway watches for the disconnect and cancels the upstream call, and
the engine, seeing its connection closed, aborts the sequence.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import Proc

pytestmark = pytest.mark.integration
LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]


def _engine_metric(engine: Proc, name: str) -> float:
    text = httpx.get(engine.base_url.removesuffix("/v1") + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"engine does not export {name}")


def _running(engine: Proc) -> float:
    return _engine_metric(engine, "spillgate_engine_requests_running")


def _wait(condition: object, timeout_s: float) -> float:
    """Seconds until `condition()` held (polled every 50 ms); raises on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


def _leave_mid_request(node: Proc, engine: Proc) -> tuple[bool, float]:
    """Send a long non-stream request, leave once the engine runs it; (aborted?, seconds until
    the engine was idle again)."""
    _wait(lambda: _running(engine) == 0, 30)  # start from an idle engine
    aborted = _engine_metric(engine, "spillgate_engine_requests_aborted_total")
    url = urlsplit(node.base_url)
    body = json.dumps({"model": "local", "messages": LONG, "max_tokens": 1500,
                       "temperature": 0.8}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=30) as client:
        client.sendall(request)
        _wait(lambda: _running(engine) >= 1, 30)
        time.sleep(0.1)  # generating now; 1500 tokens would take many seconds more
    # The socket is closed: the gateway cancels its upstream call and the engine aborts the
    # sequence. Aborted, not finished: left alone it would generate to the end (a success).
    freed_after_s = _wait(lambda: _running(engine) == 0, 30)
    return _engine_metric(engine, "spillgate_engine_requests_aborted_total") > aborted, \
        freed_after_s


def test_client_leaving_a_non_stream_request_frees_the_engine(node: Proc, engine: Proc) -> None:
    # The small model often ends its answer itself (EOS) before the disconnect lands: an
    # answer it finished is not an abort. Asked this 20 times at this temperature, it stopped
    # within 0.55 s in 12 (CI once saw three short answers in a row), so up to eight tries;
    # without the gateway's disconnect watcher none of them is ever aborted (the engine
    # generates to the end).
    tries: list[tuple[bool, float]] = []
    while len(tries) < 8 and not any(aborted for aborted, _ in tries):
        tries.append(_leave_mid_request(node, engine))
    assert tries[-1][0], tries
    print(f"engine freed {tries[-1][1]:.2f} s after the client left")
