"""UpstreamHttp.post_json to a plain-http upstream (backends/plain_http.py, no aiohttp): real
loopback servers that answer as scripted. What it keeps: the request bytes an upstream needs,
keep-alive reuse and the pool's limit, chunked, gzip and close-delimited answers, the same
UpstreamFailure texts as the aiohttp path for 5xx/429 (Retry-After), refused connections,
silent upstreams and servers that hang up, and a cancelled call closing its connection."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import orjson
import pytest

from spillgate.backends.base import UpstreamFailure
from spillgate.backends.http import Timeouts, UpstreamHttp

Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep going
OK = orjson.dumps({"id": "x", "usage": {"prompt_tokens": 1}})


def _answer(status: bytes, body: bytes, *fields: bytes) -> bytes:
    head = b"".join(f + b"\r\n" for f in fields)
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status, head, len(body), body)


class Upstream:
    """A loopback server: reads each request (head and content-length body), hands it to the
    handler; counts connections and keeps every request's bytes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.closed = asyncio.Event()
        self.received = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                self.received.set()
                if not await self.handler(head, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[Upstream, str]]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Upstream, str]:
        upstream = Upstream(handler)
        server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return upstream, f"http://127.0.0.1:{port}/v1"

    yield start
    for server in servers:
        server.close()


def _http(url: str, read_s: float = 30.0, limit: int = 8) -> UpstreamHttp:
    http = UpstreamHttp(url, timeouts=Timeouts(2.0, read_s), max_connections=limit,
                        headers={"authorization": "Bearer k"})
    assert http._plain is not None  # the path under test
    return http


async def _silent(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    return True  # reads the next request, never answers


async def _ok(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(_answer(b"200 OK", OK, b"content-type: application/json"))
    return True


async def test_a_kept_connection_serves_calls_in_turn_with_the_request_an_upstream_needs(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    upstream, url = await serve(_ok)
    http = _http(url)
    for _ in range(3):
        assert await http.post_json("/chat/completions", {"model": "m"}) == (
            200, orjson.loads(OK))
    await http.aclose()
    assert upstream.connections == 1
    head, body = upstream.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\ncontent-type: application/json\r\n" in head
    assert b"\r\nauthorization: Bearer k\r\n" in head
    assert f"\r\nHost: {url.split('/')[2]}\r\n".encode() in head
    assert body == b'{"model":"m"}'


async def test_the_pool_holds_at_most_its_limit_of_connections(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    upstream, url = await serve(_ok)
    http = _http(url, limit=2)
    results = await asyncio.gather(*(http.post_json("/x", {}) for _ in range(10)))
    await http.aclose()
    assert all(status == 200 for status, _ in results)
    assert upstream.connections <= 2


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n" + OK[:5] + b"\r\n"
    + b"%x\r\n" % (len(OK) - 5) + OK[5:] + b"\r\n0\r\n\r\n",
    _answer(b"200 OK", gzip.compress(OK), b"content-encoding: gzip"),
])
async def test_chunked_and_gzip_answers_are_read(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]], raw: bytes) -> None:
    async def handler(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        return True

    _, url = await serve(handler)
    http = _http(url)
    assert await http.post_json("/x", {}) == (200, orjson.loads(OK))
    assert await http.post_json("/x", {}) == (200, orjson.loads(OK))  # and the next one
    await http.aclose()


async def test_an_answer_ended_by_the_close_is_read_and_the_next_call_reconnects(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    async def handler(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + OK)
        return False  # the server closes: that ends the body

    upstream, url = await serve(handler)
    http = _http(url)
    assert await http.post_json("/x", {}) == (200, orjson.loads(OK))
    assert await http.post_json("/x", {}) == (200, orjson.loads(OK))
    await http.aclose()
    assert upstream.connections == 2


async def test_a_client_error_status_is_returned_and_a_5xx_raises_with_retry_after(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    answers = [_answer(b"400 Bad Request", b'{"error":{"message":"no"}}'),
               _answer(b"503 Service Unavailable", b"busy", b"retry-after: 7"),
               _answer(b"429 Too Many Requests", b'{"error":{"message":"slow down"}}')]

    async def handler(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answers.pop(0))
        return True

    _, url = await serve(handler)
    http = _http(url)
    assert await http.post_json("/x", {}) == (400, {"error": {"message": "no"}})
    with pytest.raises(UpstreamFailure) as busy:
        await http.post_json("/x", {})
    assert (str(busy.value), busy.value.upstream_status, busy.value.retry_after_s) == (
        "upstream answered 503: Service Unavailable", 503, 7.0)
    with pytest.raises(UpstreamFailure, match="upstream answered 429: slow down"):
        await http.post_json("/x", {})
    await http.aclose()


async def test_a_refused_connection_and_a_hang_up_are_unreachable_upstreams(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    async def hang_up(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    _, url = await serve(hang_up)
    http = _http(url)
    with pytest.raises(UpstreamFailure) as gone:
        await http.post_json("/x", {})
    await http.aclose()
    assert (str(gone.value), gone.value.upstream_status) == (
        "upstream unreachable: ServerDisconnectedError", 503)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    http = _http(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(UpstreamFailure) as refused:
        await http.post_json("/x", {})
    await http.aclose()
    assert (str(refused.value), refused.value.upstream_status) == (
        "upstream unreachable: ClientConnectorError", 503)


async def test_a_silent_upstream_times_out(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    upstream, url = await serve(_silent)
    http = _http(url, read_s=0.05)
    with pytest.raises(UpstreamFailure) as late:
        await http.post_json("/x", {})
    await http.aclose()
    assert (str(late.value), late.value.upstream_status) == ("upstream timed out", 504)
    await upstream.closed.wait()  # and the connection was closed, not pooled


async def test_a_cancelled_call_closes_its_connection(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    upstream, url = await serve(_silent)
    http = _http(url)
    call = asyncio.ensure_future(http.post_json("/x", {}))
    await upstream.received.wait()  # the request reached the upstream
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await http.aclose()
    await upstream.closed.wait()  # the upstream sees the client leave


def test_https_credentials_total_timeouts_and_odd_fields_stay_on_aiohttp() -> None:
    for url, timeouts, headers in [
            ("https://api.example/v1", Timeouts(1, 2), {}),
            ("http://user:pw@engine/v1", Timeouts(1, 2), {}),
            ("http://engine/v1", Timeouts(1, 2, 30.0), {}),
            ("http://engine/v1", Timeouts(1, 2), {"authorization": "k\r\nx-injected: 1"})]:
        assert UpstreamHttp(url, timeouts=timeouts, max_connections=1,
                            headers=headers)._plain is None


# --- streamed answers (UpstreamHttp.stream_lines on plain_http) -------------------------------

def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\n\r\n")


def _stream_of(events: list[bytes], between: asyncio.Event | None = None,
               end: bool = True) -> Handler:
    """Answers with one chunk per event; waits for `between` after the first (the reader
    must have it before the second is sent). `end=False` hangs up instead of ending."""
    async def handler(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(STREAM_HEAD)
        for i, event in enumerate(events):
            writer.write(_chunk(event))
            await writer.drain()
            if i == 0 and between is not None:
                await between.wait()
        if not end:
            return False  # the connection closes mid-stream
        writer.write(b"0\r\n\r\n")
        return True
    return handler


async def _lines(http: UpstreamHttp, sink: list[tuple[int, list[bytes]]] | None = None,
                 on_first: asyncio.Event | None = None) -> list[tuple[int, list[bytes]]]:
    got = [] if sink is None else sink
    async for status, lines in http.stream_lines("/chat/completions", {"stream": True}):
        got.append((status, lines))
        if on_first is not None:
            on_first.set()
    return got


async def test_a_stream_is_handed_on_as_it_arrives_and_its_connection_kept(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    first_read = asyncio.Event()
    upstream, url = await serve(_stream_of([b"data: 1\n\n", b"data: 2\n\ndata: [DONE]\n\n"],
                                           between=first_read))
    http = _http(url)
    got = await _lines(http, on_first=first_read)  # deadlocks if the first piece is held
    assert got[0] == (200, [b"data: 1", b""])
    assert [line for _, lines in got for line in lines if line] == [
        b"data: 1", b"data: 2", b"data: [DONE]"]
    first_read.set()
    await _lines(http)  # the same connection serves the next stream
    await http.aclose()
    assert upstream.connections == 1
    head, body = upstream.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"authorization: Bearer k" in head and orjson.loads(body) == {"stream": True}


async def test_a_reader_that_stops_early_closes_its_connection(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    gone = asyncio.Event()

    async def endless(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(STREAM_HEAD)
        try:
            for _ in range(500):  # an engine decoding on, until its writes fail
                writer.write(_chunk(b"data: 1\n\n"))
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            gone.set()
        return False

    _, url = await serve(endless)
    http = _http(url)
    pieces = http.stream_lines("/chat/completions", {})
    assert (await anext(pieces))[0] == 200
    await pieces.aclose()  # the client went away mid-answer
    await asyncio.wait_for(gone.wait(), 5)  # the engine sees it leave
    await http.aclose()


async def test_a_stream_cut_short_or_gone_silent_fails_as_the_upstreams_fault(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    _, cut_url = await serve(_stream_of([b"data: 1\n\n"], end=False))
    http = _http(cut_url)
    got: list[tuple[int, list[bytes]]] = []
    with pytest.raises(UpstreamFailure) as cut:
        await _lines(http, got)
    assert got == [(200, [b"data: 1", b""])]  # what came before the cut was handed on
    assert cut.value.upstream_status == 503
    await http.aclose()

    never = asyncio.Event()
    _, quiet_url = await serve(_stream_of([b"data: 1\n\n", b"data: 2\n\n"], between=never))
    http = _http(quiet_url, read_s=0.05)
    with pytest.raises(UpstreamFailure) as late:
        await _lines(http)
    assert (str(late.value), late.value.upstream_status) == ("upstream timed out", 504)
    await http.aclose()


async def test_a_streamed_error_status_comes_whole_and_a_5xx_raises(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    error = orjson.dumps({"error": {"message": "bad request body"}})

    async def refuse(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        status = b"400 Bad Request" if b"first" in body else b"503 Service Unavailable"
        writer.write(_answer(status, error, b"retry-after: 7"))
        return True

    _, url = await serve(refuse)
    http = _http(url)
    got = [item async for item in http.stream_lines("/x", {"first": True})]
    assert got == [(400, [error])]
    with pytest.raises(UpstreamFailure) as busy:
        await _lines(http)
    assert busy.value.upstream_status == 503 and busy.value.retry_after_s == 7
    assert "bad request body" in str(busy.value)
    await http.aclose()


async def test_a_gzip_stream_is_decoded_piece_by_piece(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    packer = zlib.compressobj(wbits=31)
    parts = [packer.compress(b"data: 1\n\n") + packer.flush(zlib.Z_SYNC_FLUSH),
             packer.compress(b"data: 2\n\n") + packer.flush()]

    async def gzipped(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(STREAM_HEAD.replace(b"\r\n\r\n", b"\r\ncontent-encoding: gzip\r\n\r\n"))
        for part in parts:
            writer.write(_chunk(part))
        writer.write(b"0\r\n\r\n")
        return True

    _, url = await serve(gzipped)
    http = _http(url)
    got = await _lines(http)
    await http.aclose()
    assert [line for _, lines in got for line in lines if line] == [b"data: 1", b"data: 2"]


async def test_a_reader_that_stops_at_the_last_event_of_an_ended_answer_keeps_the_connection(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    """As the OpenAI backend does: it stops at `data: [DONE]`. When the answer's end came
    with it, the connection serves the next call; when it had not come yet, it is closed."""
    async def whole(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(STREAM_HEAD + _chunk(b"data: 1\n\ndata: [DONE]\n\n") + b"0\r\n\r\n")
        return True

    upstream, url = await serve(whole)
    http = _http(url)
    for _ in range(3):
        async with aclosing(http.stream_lines("/chat/completions", {})) as pieces:
            async for _status, lines in pieces:
                if b"data: [DONE]" in lines:
                    break
    await http.aclose()
    assert upstream.connections == 1


async def test_a_slow_reader_of_a_large_stream_gets_all_of_it_in_order(
        serve: Callable[[Handler], Awaitable[tuple[Upstream, str]]]) -> None:
    """More than the 64 KiB the connection holds for a lagging reader: reading the socket
    pauses and resumes, and nothing is lost or reordered."""
    events = [b"data: %05d %s\n\n" % (i, b"x" * 8000) for i in range(40)]
    _, url = await serve(_stream_of(events))
    http = _http(url, read_s=5.0)
    got: list[bytes] = []
    async for _status, lines in http.stream_lines("/chat/completions", {}):
        got += [line for line in lines if line]
        await asyncio.sleep(0.002)  # a client that reads slowly
    await http.aclose()
    assert got == [event.rstrip(b"\n") for event in events]
