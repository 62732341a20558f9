"""A response head leaves with its body in one write, and is never held longer than one turn
of the loop (spillgate.held_head): over a recording transport, then through the node's
own HTTP protocol (uvicorn with the head limits) on a loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from spillgate.api.http_limits import HeadLimits, head_limited_protocol
from spillgate.held_head import HeldHeadTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording:
    """A transport that keeps each write as one item."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def held(real: Recording) -> HeldHeadTransport:
    return HeldHeadTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_a_head_and_the_body_sent_after_it_leave_in_one_write() -> None:
    real = Recording()
    transport = held(real)
    transport.write(HEAD)
    transport.write(b"ok")
    assert real.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"ok"]  # the head is not sent a second time


async def test_a_head_whose_body_is_late_leaves_on_the_next_turn_of_the_loop() -> None:
    real = Recording()
    transport = held(real)
    transport.write(HEAD)
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [HEAD]
    transport.write(b"ok")
    assert real.writes == [HEAD, b"ok"]


async def test_100_continue_and_body_bytes_are_not_held() -> None:
    real = Recording()
    transport = held(real)
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    transport.write(b"5\r\nhello\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"5\r\nhello\r\n"]


async def test_closing_sends_a_held_head_first() -> None:
    real = Recording()
    transport = held(real)
    transport.write(HEAD)
    transport.close()
    assert real.writes == [HEAD] and real.closed
    await asyncio.sleep(0)
    assert real.writes == [HEAD]


async def test_a_head_is_dropped_when_the_socket_closed_under_it() -> None:
    real = Recording()
    transport = held(real)
    transport.write(HEAD)
    real.closed = True  # the client went away before the loop turned
    await asyncio.sleep(0)
    assert real.writes == []


# --- through the node's protocol, on a real socket --------------------------------------------

async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    length = b"2" if scope["path"] != "/stream" else None
    headers = [(b"content-length", length)] if length else []
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    if scope["path"] == "/stream":
        for piece in (b"a", b"b"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[int]:
    """The node's protocol on an ephemeral port, in this test's loop."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=head_limited_protocol(
        HeadLimits()), lifespan="off", log_level="warning", access_log=False)
    node = uvicorn.Server(config)
    task = asyncio.create_task(node.serve())
    while not node.started:  # noqa: ASYNC110 (uvicorn's own flag; it has no event)
        await asyncio.sleep(0.01)
    try:
        yield node.servers[0].sockets[0].getsockname()[1]
    finally:
        node.should_exit = True
        await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def connection() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()
            await writer.wait_closed()


async def read_until(reader: asyncio.StreamReader, end: bytes, within_s: float) -> bytes:
    got = b""
    async with asyncio.timeout(within_s):
        while not got.endswith(end):
            piece = await reader.read(65536)
            if not piece:
                raise EOFError(f"closed by the server after {got[:200]!r}")
            got += piece
    return got


def data_segments_in(writer: asyncio.StreamWriter) -> int:
    """Segments with data this socket has received (Linux's tcp_info.tcpi_data_segs_in)."""
    info = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return int(struct.unpack_from("I", info, 152)[0])


async def test_a_plain_answer_reaches_the_client_in_one_segment() -> None:
    async with connection() as (reader, writer):
        for _ in range(3):  # uvicorn sets TCP_NODELAY: each write of its is a segment
            before = data_segments_in(writer)
            writer.write(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await read_until(reader, b"ok", within_s=2)).startswith(b"HTTP/1.1 200")
            assert data_segments_in(writer) - before == 1


async def test_a_slow_body_does_not_hold_its_head_back() -> None:
    async with connection() as (reader, writer):
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await read_until(reader, b"\r\n\r\n", within_s=0.3)  # the body comes at 0.5 s
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 2" in head
        assert await read_until(reader, b"ok", within_s=2) == b"ok"


async def test_pipelined_answers_arrive_whole_and_in_order() -> None:
    async with connection() as (reader, writer):
        writer.write(b"".join(b"%s HTTP/1.1\r\nhost: x\r\n\r\n" % line for line in (
            b"GET /slow", b"GET /fast", b"HEAD /fast", b"GET /stream")))
        got = await read_until(reader, b"0\r\n\r\n", within_s=5)
        answers = got.split(b"HTTP/1.1 200 OK\r\n")
        assert len(answers) == 5 and answers[0] == b""
        assert [a.endswith(b"\r\n\r\nok") for a in answers[1:3]] == [True, True]
        assert answers[3].endswith(b"\r\n\r\n")  # HEAD: the head alone, nothing held back
        assert answers[4].endswith(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n")


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async with connection() as (reader, writer):
        writer.write(b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
                     b"expect: 100-continue\r\n\r\n")
        interim = await read_until(reader, b"\r\n\r\n", within_s=2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        answer = await read_until(reader, b"ok", within_s=2)
        assert answer.startswith(b"HTTP/1.1 200 OK")
