"""The hot-route protocol's failure paths, in process: bytes in through `data_received`, the
written bytes read back with h11. A route stands in for the service so that a reply can be
made to fail where no real request can make it fail (tests/integration/test_hot_protocol.py
drives the running node for everything else)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.server import ServerState

from spillgate import service
from spillgate.api.hot import Channel, HotRoute
from spillgate.api.hot_protocol import HotProtocol
from spillgate.errors import ClientClosed

CHAT = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\ncontent-length: 2\r\n\r\n{}")
Answer = Callable[[Channel], Awaitable[service.Reply | service.StreamReply]]


class Transport:
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, *args: Any) -> None: ...


class Route(HotRoute):
    def __init__(self, answer: Answer) -> None:
        self.node = SimpleNamespace(limits=SimpleNamespace(max_body_bytes=1024))  # type: ignore[assignment]
        self._answer = answer

    async def answer(self, headers: dict[str, str], channel: Channel,
                     rid: str) -> service.Reply | service.StreamReply:
        await channel.read_body(headers, 1024)
        async with channel.watch():
            return await self._answer(channel)


async def _connection(answer: Answer) -> tuple[HotProtocol, Transport]:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # the ASGI side: unused
        raise AssertionError("a hot request reached ASGI")

    cls = type("P", (HotProtocol,), {"hot": {b"/v1/chat/completions": Route(answer)}})
    protocol = cls(config=Config(app=app), server_state=ServerState(),
                   app_state={}, _loop=asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _read(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes, bool]]:
    """Each complete answer: status, headers, body; and whether the last one was complete."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"),
                                                               ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")  # the bytes end here
    status, headers, body = 0, {}, b""
    try:
        while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Response):
                status, headers = event.status_code, {k: v for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return [(status, headers, body, True)]
    except h11.RemoteProtocolError:
        pass
    return [(status, headers, body, False)]


async def test_a_reply_that_cannot_be_written_is_a_500_and_the_connection_ends() -> None:
    async def unserializable(channel: Channel) -> service.Reply:
        return service.Reply({"answer": {1, 2}}, {})  # a set: orjson refuses it

    protocol, transport = await _connection(unserializable)
    protocol.data_received(CHAT)
    await _settle()
    [(status, headers, body, complete)] = _read(transport.data)
    assert (status, complete) == (500, True)
    assert headers[b"connection"] == b"close" and transport.closed
    assert b"internal error" in body and b"{1, 2}" not in body


async def _chunks(*pieces: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
    if fail:
        raise RuntimeError("upstream broke")


async def test_a_stream_that_fails_midway_is_cut_not_ended() -> None:
    async def failing(channel: Channel) -> service.StreamReply:
        return service.StreamReply(_chunks(b"data: {}\n\n", fail=True))

    protocol, transport = await _connection(failing)
    protocol.data_received(CHAT)
    await _settle()
    [(status, _, body, complete)] = _read(transport.data)
    assert status == 200 and body == b"data: {}\n\n"
    assert not complete and transport.closed  # no `0` chunk: the client sees a cut answer


async def test_an_empty_piece_does_not_end_a_stream() -> None:
    async def with_empty(channel: Channel) -> service.StreamReply:
        return service.StreamReply(_chunks(b"data: 1\n\n", b"", b"data: 2\n\n",
                                           b"data: [DONE]\n\n"))

    protocol, transport = await _connection(with_empty)
    protocol.data_received(CHAT)
    await _settle()
    [(status, _, body, complete)] = _read(transport.data)
    assert (status, complete) == (200, True)
    assert body == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert not transport.closed  # kept alive


async def test_a_client_gone_behind_a_pipelined_request_still_cancels_its_answer() -> None:
    outcome: list[str] = []

    async def slow(channel: Channel) -> service.Reply:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return service.Reply({}, {})

    protocol, transport = await _connection(slow)
    # A second request pipelined behind the first takes the protocol's current cycle.
    protocol.data_received(CHAT + b"GET /healthz HTTP/1.1\r\nhost: node\r\n\r\n")
    await _settle()
    protocol.connection_lost(None)
    await _settle()
    assert outcome == ["cancelled"]
    assert transport.data == b""  # nothing written to a client that is gone


async def test_a_client_gone_mid_body_ends_as_client_closed_with_nothing_written() -> None:
    outcome: list[str] = []

    async def unreachable(channel: Channel) -> service.Reply:
        outcome.append("served")
        return service.Reply({}, {})

    protocol, transport = await _connection(unreachable)
    route = next(iter(protocol.hot.values()))
    answer = route.answer

    async def recording(*args: Any) -> service.Reply | service.StreamReply:
        try:
            return await answer(*args)
        except ClientClosed:
            outcome.append("client closed")
            raise

    route.answer = recording  # type: ignore[method-assign]
    protocol.data_received(CHAT[:-1])  # the body's last byte never comes
    await _settle()
    protocol.connection_lost(None)
    await _settle()
    assert outcome == ["client closed"]
    assert transport.data == b""


async def test_a_kept_connection_holds_no_request_body_after_its_answer() -> None:
    """An idle keep-alive connection must not pin its last request's body (up to the cap)."""
    async def answered(channel: Channel) -> service.Reply:
        return service.Reply({"ok": True}, {})

    protocol, transport = await _connection(answered)
    big = b"x" * 1000
    protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nhost: node\r\n"
                           b"content-length: %d\r\n\r\n%s" % (len(big), big))
    await _settle()
    [(status, _, _, complete)] = _read(transport.data)
    assert (status, complete) == (200, True) and not transport.closed
    exchange = protocol._hot
    assert exchange is not None and exchange.response_complete
    assert exchange._chunks == []  # the retained state is what is tested
