"""The node's own HTTP handling of the hot routes (api/hot_protocol.py), over real sockets.

A running node in front of the benchmark's fake upstream; requests are written byte for byte
and the answers read with h11 (an HTTP parser that is not the node's). What a client relies
on: answers in order on a kept connection however the bytes are split and whatever mix of
hot and other routes is pipelined, `connection: close` and HTTP/1.0 honoured, 100 Continue,
413 before an oversized body is read, chunked streams that end properly, and a client that
leaves mid-body counted as 499."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator

import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_node
from tests.support import REPO, Proc, free_port, raw_connection, spawn, until_closed

pytestmark = pytest.mark.integration
CAP = 8192  # the node's body limit here


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hot-upstream")
    port = free_port()
    argv = [str(REPO / "scripts" / "fake_upstream.py"), "--port", str(port),
            "--delay-ms", "2", "--chunks", "3", "--chunk-ms", "2"]
    with spawn(argv, tmp / "upstream.log", f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def node(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("hot-node")
    config = {
        "server": {"port": free_port(), "max_body_bytes": CAP},
        "local": [{"name": "upstream", "model": "smollm2", "base_urls": [upstream]}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
    }
    with run_node(config, tmp) as proc:
        yield proc


def _connect(node: Proc) -> contextlib.AbstractContextManager[socket.socket]:
    # A missing or unended answer fails within seconds (each read waits this long at most).
    return raw_connection(node, timeout_s=5)


def _chat(stream: bool = False, extra: str = "") -> bytes:
    body = json.dumps({"model": "smollm2", "max_tokens": 4, "stream": stream,
                       "messages": [{"role": "user", "content": "Say ok." + extra}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


# What each request is and what its answer must be: (bytes, status, content type prefix).
REQUESTS: dict[str, tuple[bytes, int, bytes]] = {
    "chat": (_chat(), 200, b"application/json"),
    "stream": (_chat(stream=True), 200, b"text/event-stream"),
    "bad_json": (b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\n"
                 b"content-length: 5\r\n\r\n{nope", 400, b"application/json"),
    "health": (b"GET /healthz HTTP/1.1\r\nhost: node\r\n\r\n", 200, b"application/json"),
    "get_hot": (b"GET /v1/chat/completions HTTP/1.1\r\nhost: node\r\n\r\n", 405,
                b"application/json"),
    "query": (_chat().replace(b"/v1/chat/completions", b"/v1/chat/completions?x=1", 1), 200,
              b"application/json"),
}


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """`count` answers off a kept connection, in order: status, headers, body. h11 expects
    to have sent each request itself, so it is told of them as placeholders."""
    out = []
    conn = h11.Connection(h11.CLIENT)
    for _ in range(count):
        conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"),
                                                                   ("content-length", "0")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                assert data, "the node closed the connection early"
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, {k.lower(): v for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append((status, headers, body))
        conn.start_next_cycle()
    return out


def _assert_answer(name: str, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
    _, want_status, want_type = REQUESTS[name]
    assert status == want_status, (name, status, body[:200])
    assert headers[b"content-type"].startswith(want_type), (name, headers)
    assert b"date" in headers
    if name in ("chat", "query"):
        assert json.loads(body)["choices"][0]["message"]["content"] == "ok"
        assert re.fullmatch(rb"[0-9a-f-]{8,}", headers[b"x-request-id"]), headers
    elif name == "stream":
        assert headers[b"transfer-encoding"] == b"chunked"
        assert body.endswith(b"data: [DONE]\n\n"), body[-80:]
        assert b'"content"' in body
    elif name == "bad_json":
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        assert b"x-request-id" in headers


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(sorted(REQUESTS)), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8))
def test_answers_come_in_order_however_requests_are_split_and_mixed(
        node: Proc, names: list[str], cuts: list[int]) -> None:
    """Pipelined hot and other requests, written in pieces cut at arbitrary bytes (a head,
    a header field, a body split anywhere): every answer arrives, in order, well framed."""
    data = b"".join(REQUESTS[name][0] for name in names)
    with _connect(node) as sock:
        at = 0
        for cut in cuts:
            sock.sendall(data[at:at + cut])
            at += cut
        sock.sendall(data[at:])
        answers = _read_answers(sock, len(names))
    for name, (status, headers, body) in zip(names, answers, strict=True):
        _assert_answer(name, status, headers, body)


@pytest.mark.parametrize("request_bytes", [
    _chat().replace(b"host: node\r\n", b"host: node\r\nconnection: close\r\n", 1),
    _chat().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
], ids=["connection-close", "http-1.0"])
def test_a_connection_the_client_closes_is_answered_then_closed(
        node: Proc, request_bytes: bytes) -> None:
    with _connect(node) as sock:
        sock.sendall(request_bytes)
        # Each read waits 2 s at most, under the node's 5 s keep-alive timeout: a connection
        # left open fails here rather than closing later.
        received = until_closed(sock, timeout_s=2)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close" in head.lower()
    assert json.loads(body)["choices"][0]["message"]["content"] == "ok"


def test_expect_100_continue_gets_continue_before_the_body(node: Proc) -> None:
    request = _chat()
    head, _, body = request.partition(b"\r\n\r\n")
    with _connect(node) as sock:
        sock.sendall(head + b"\r\nexpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        [(status, _, answer)] = _read_answers(sock, 1)
    assert status == 200 and json.loads(answer)["choices"]


def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(node: Proc) -> None:
    with _connect(node) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\n"
                     b"content-length: %d\r\n\r\n" % (CAP * 1000))
        [(status, headers, body)] = _read_answers(sock, 1)  # no body byte was sent
    assert status == 413
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert b"x-request-id" in headers


def test_a_chunked_body_over_the_cap_is_413(node: Proc) -> None:
    piece = b"x" * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(CAP // 1024 + 2))
    with _connect(node) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\n"
                     b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        [(status, _, body)] = _read_answers(sock, 1)
    assert status == 413
    assert "limit" in json.loads(body)["error"]["message"]


def test_a_stream_then_a_plain_answer_on_one_connection(node: Proc) -> None:
    with _connect(node) as sock:
        sock.sendall(REQUESTS["stream"][0])
        [stream] = _read_answers(sock, 1)
        sock.sendall(REQUESTS["chat"][0])
        [plain] = _read_answers(sock, 1)
    _assert_answer("stream", *stream)
    _assert_answer("chat", *plain)


def _count_499(node: Proc) -> float:
    text = httpx.get(node.base_url.removesuffix("/v1") + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("spillgate_requests_total{") and 'status="499"' in line)


def test_a_client_gone_mid_body_is_counted_as_499(node: Proc) -> None:
    before = _count_499(node)
    request = _chat()
    with _connect(node) as sock:
        sock.sendall(request[:-10])  # the head and most of the body
    for _ in range(50):  # the node notices the close on its next loop turn
        if _count_499(node) > before:
            break
        httpx.get(node.base_url.removesuffix("/v1") + "/healthz")
    assert _count_499(node) == before + 1
