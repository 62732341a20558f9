"""Keep-alive HTTP/1.1 POSTs to a plain-http upstream, without aiohttp's per-call machinery.

Why: aiohttp's `ClientSession._request` (URL and header merging, cookie jar, traces, a timeout
handle, a writer task for the body, a response object with its own stream reader) costs ~60 µs
of CPU per call at 16 in flight against a 0 ms upstream; the same POST over an asyncio
protocol and httptools' parser costs ~18 µs (`UpstreamHttp.post_json`, measured both ways in
one process). The gateway's event loop is CPU-bound at 64
clients, and every non-stream request makes one such call.

Scope (`UpstreamHttp` keeps aiohttp for everything else): POSTs to an `http://` base URL
without credentials in it and without a total timeout — the local engines — answered whole
(`post`) or streamed (`stream`: the body handed on as it arrives, which every relayed token
of a local stream goes through). What it
keeps from the aiohttp path: one pool per upstream holding at most `max_connections`
connections (waiting for a free one beyond that), a connection reused only when the answer
says keep-alive and the server has not closed it, the connect timeout and the read timeout
(the longest silence while the answer is awaited), a cancelled call closing its connection
(the engine sees the client leave), gzip/deflate answers decoded, and the same
`UpstreamFailure` texts (the aiohttp exception a failure would have raised names it). A POST is
never retried on a reused connection the server had closed, as aiohttp does not retry one.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

import httptools

from spillgate.backends.base import UpstreamFailure


@dataclass(slots=True)
class Answer:
    status: int
    reason: str
    headers: dict[bytes, bytes]  # lower-case names; the first of a repeated field
    body: bytes


@dataclass(slots=True)
class _Pending:
    waiter: asyncio.Future[None]
    last_read: float
    timer: asyncio.TimerHandle | None = None
    reason: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    head_done: bool = False
    wake: asyncio.Future[None] | None = None  # a streaming reader waits on it for news
    buffered: int = 0  # body bytes a streaming reader has not taken yet
    paused: bool = False  # the socket's reading is paused until the reader catches up


STREAM_HIGH_WATER = 1 << 16  # a stream's unread body beyond this pauses reading the socket


def _unreachable(name: str) -> UpstreamFailure:
    return UpstreamFailure(f"upstream unreachable: {name}", upstream_status=503)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pending: _Pending | None = None
        self.closed = False
        self.keep_alive = False
        self.answered = False  # the last exchange's answer arrived to its end

    # --- asyncio ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        p = self.pending
        if p is not None and p.head_done and exc is None and not any(
                k in p.headers for k in (b"content-length", b"transfer-encoding")):
            self.on_message_complete()  # a body delimited by a clean close (HTTP/1.0 style)
        else:
            self._fail(_unreachable("ServerDisconnectedError"))

    def data_received(self, data: bytes) -> None:
        if self.pending is None:  # nothing asked: a server talking out of turn
            self.close()
            return
        self.pending.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(_unreachable("ClientResponseError"))
            self.close()

    # --- httptools callbacks ------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        if self.pending is not None:
            self.pending.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.pending is not None:
            self.pending.headers.setdefault(name.lower(), value.strip())

    def on_headers_complete(self) -> None:
        if self.pending is not None:
            self.pending.head_done = True
            self._nudge()

    def on_body(self, body: bytes) -> None:
        p = self.pending
        if p is not None:
            p.body.append(body)
            if p.wake is not None:  # streaming: tell the reader, hold the socket if it lags
                p.buffered += len(body)
                if p.buffered > STREAM_HIGH_WATER and not p.paused \
                        and self.transport is not None:
                    self.transport.pause_reading()
                    p.paused = True
                self._nudge()

    def on_message_complete(self) -> None:
        self.keep_alive = not self.closed and self.parser.should_keep_alive()
        if self.pending is not None and not self.pending.waiter.done():
            self.pending.waiter.set_result(None)
        self._nudge()

    def _nudge(self) -> None:
        p = self.pending
        if p is not None and p.wake is not None and not p.wake.done():
            p.wake.set_result(None)

    # --- one exchange -------------------------------------------------------------------
    async def exchange(self, request: bytes, read_s: float) -> Answer:
        loop = self.loop
        p = self.pending = _Pending(loop.create_future(), loop.time())
        assert self.transport is not None
        self.transport.write(request)
        p.timer = loop.call_later(read_s, self._check_silence, read_s)
        try:
            await p.waiter
        finally:
            if p.timer is not None:
                p.timer.cancel()
            self.pending = None
        body = b"".join(p.body)
        decoder = _decoder(p.headers)
        if decoder is not None:
            body = _decoded(decoder, body)
        return Answer(self.parser.get_status_code(), p.reason.decode("latin-1"), p.headers,
                      body)

    # --- one streamed exchange ---------------------------------------------------------
    async def stream(self, request: bytes, read_s: float) -> AsyncGenerator[Answer]:
        """Send `request`; yield the answer's body as it arrives, each piece everything that
        came since the last (an `Answer` with the status and head, and that piece). A status
        of 400 or more comes whole, as one piece. Raises what `exchange` raises, mid-body
        too (a cut stream, a silence longer than `read_s`)."""
        loop = self.loop
        p = self.pending = _Pending(loop.create_future(), loop.time(), wake=loop.create_future())
        self.keep_alive = self.answered = False
        assert self.transport is not None
        self.transport.write(request)
        p.timer = loop.call_later(read_s, self._check_silence, read_s)
        try:
            while not p.head_done:
                await self._news(p)
            status, reason = self.parser.get_status_code(), p.reason.decode("latin-1")
            decoder = _decoder(p.headers)
            if status >= 400:  # an error body: whole, in one piece (empty or not)
                while not p.waiter.done():
                    await self._news(p)
                p.waiter.result()
                body = b"".join(p.body)
                yield Answer(status, reason, p.headers,
                             body if decoder is None else _decoded(decoder, body))
                return
            while True:
                if p.body:
                    piece = b"".join(p.body) if len(p.body) > 1 else p.body[0]
                    p.body.clear()
                    if p.paused:
                        self.transport.resume_reading()
                        p.paused = False
                    p.buffered = 0
                    if decoder is not None:
                        piece = _decoded(decoder, piece)
                    yield Answer(status, reason, p.headers, piece)
                elif p.waiter.done():
                    p.waiter.result()  # a failure raises here
                    return
                else:
                    await self._news(p)
        finally:
            if p.timer is not None:
                p.timer.cancel()
            if p.waiter.done() and not p.waiter.cancelled():
                # retrieved (a reader gone early leaves no warning); a reader that stopped at
                # the last event of an answer already read to its end may pass it on
                self.answered = p.waiter.exception() is None
            self.pending = None

    async def _news(self, p: _Pending) -> None:
        """Until the connection has news for a streaming reader: head, body, end or failure
        (a failure raises)."""
        if p.waiter.done():
            p.waiter.result()
            return
        assert p.wake is not None
        await p.wake
        p.wake = self.loop.create_future()

    def _check_silence(self, read_s: float) -> None:
        """The read timeout: the answer must keep arriving, no gap longer than `read_s`."""
        p = self.pending
        if p is None or p.waiter.done():
            return
        quiet = self.loop.time() - p.last_read
        if p.paused:  # our reader lags, not the upstream: not silence
            quiet = 0.0
        if quiet < read_s - 0.001:
            p.timer = self.loop.call_later(read_s - quiet, self._check_silence, read_s)
            return
        self._fail(UpstreamFailure("upstream timed out", upstream_status=504))
        self.close()

    def _fail(self, exc: BaseException) -> None:
        p = self.pending
        if p is not None and not p.waiter.done():
            p.waiter.set_exception(exc)
        self._nudge()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _decoder(headers: dict[bytes, bytes]) -> zlib._Decompress | None:
    """A decompressor for the answer's content-encoding (None: identity)."""
    encoding = headers.get(b"content-encoding", b"identity").lower()
    if encoding in (b"gzip", b"deflate", b"x-gzip"):
        return zlib.decompressobj(47)  # wbits 47: gzip or zlib framing, told apart by the header
    if encoding != b"identity":
        raise _unreachable("ClientPayloadError")
    return None


def _decoded(decoder: zlib._Decompress, piece: bytes) -> bytes:
    try:
        return decoder.decompress(piece)
    except zlib.error:
        raise _unreachable("ClientPayloadError") from None


class PlainHttpPool:
    """Keep-alive connections to one http:// host, at most `limit` of them."""

    def __init__(self, host: str, port: int, head: bytes, *, connect_s: float,
                 read_s: float, limit: int) -> None:
        self._host, self._port = host, port
        self._head = head  # the header fields every request carries, CRLF-terminated
        self._connect_s, self._read_s = connect_s, read_s
        self._limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(limit)
        self._idle: collections.deque[_Connection] = collections.deque()
        self._opened: set[_Connection] = set()  # made since the last close(): may be pooled

    async def post(self, target: bytes, body: bytes) -> Answer:
        request = self._request(target, body)
        async with self._slots:
            connection = self._reusable() or await self._connect()
            try:
                answer = await connection.exchange(request, self._read_s)
            except BaseException:  # failed or cancelled: the server must see us leave
                self._drop(connection)
                raise
            if connection.keep_alive and not connection.closed \
                    and connection in self._opened:
                self._idle.append(connection)
            else:
                self._drop(connection)
            return answer

    async def stream(self, target: bytes, body: bytes) -> AsyncGenerator[Answer]:
        """POST and yield the answer's body as it arrives (`_Connection.stream`). The
        connection goes back to the pool only once its answer has arrived to its end (the
        reader may stop at the last event); a reader that stops before, fails or is
        cancelled closes it (the engine sees the client leave)."""
        request = self._request(target, body)
        async with self._slots:
            connection = self._reusable() or await self._connect()
            try:  # the connection's own reader closes first: it knows how the answer ended
                async with aclosing(connection.stream(request, self._read_s)) as pieces:
                    async for piece in pieces:
                        yield piece
            finally:
                if connection.answered and connection.keep_alive and not connection.closed \
                        and connection in self._opened:
                    self._idle.append(connection)
                else:
                    self._drop(connection)

    def _request(self, target: bytes, body: bytes) -> bytes:
        if self._loop is not asyncio.get_running_loop():  # first use, or a new event loop:
            self.close()  # connections and waiters belong to the loop that made them
            self._loop, self._slots = asyncio.get_running_loop(), asyncio.Semaphore(self._limit)
        return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            target, self._head, len(body), body)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._opened.discard(connection)

    def _reusable(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()  # the most recent: the least likely timed out
            if not connection.closed:
                return connection
            self._opened.discard(connection)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port)
        except TimeoutError:
            raise UpstreamFailure("upstream timed out", upstream_status=504) from None
        except OSError:
            raise _unreachable("ClientConnectorError") from None
        self._opened.add(connection)
        return connection

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their call ends."""
        while self._idle:
            self._idle.pop().close()
        self._opened.clear()
