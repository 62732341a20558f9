"""The hot routes served by the node's HTTP protocol itself, without ASGI.

At one client the gateway added 1.25 ms p50 over calling the upstream directly, of which an
ASGI app doing nothing but forwarding, under the same uvicorn, added 0.98 and a bare
httptools protocol forwarding over the same client 0.30 (scripts/bench_gateway.py, part a,
2026-12-03): most of what a request costs at c = 1 is the code it runs through, cold, and
uvicorn's ASGI cycle is the largest piece of it (a scope, a cycle object, an event, message
dictionaries and the `send` checks for every answer).

So `HotProtocol` (under the head limits, api/http_limits.py) takes a request whose head says
POST to a hot route and serves it with a `HotExchange` instead of an ASGI cycle: the body
is gathered as the parser hands it over, `HotRoute.answer` (api/hot.py) serves it, and the
answer is written as one block of bytes (head and body together). Everything else, and a hot
request pipelined behind an unfinished answer on the same connection, goes to uvicorn's
cycle and the ASGI app as before, where the same `HotRoute` serves it.

What uvicorn's cycle gave these routes is kept: the default headers (date), keep-alive and
`connection: close`, 100 Continue when the body is awaited, chunked streams, the write side's
flow control, graceful shutdown (the task is among the server's tasks; the connection closes
after the answer), and the 413/499 rules of `read_body`. A client that leaves cancels the
serving task at once (the connection's loss is seen here), where the ASGI path needs a
watcher task to learn it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import ClassVar, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

from spillgate import service
from spillgate.api.deps import new_request_id
from spillgate.api.hot import HotRoute, request_headers
from spillgate.errors import ApiError, ClientClosed, InternalError, PayloadTooLarge, describe
from spillgate.held_head import HeldHeadProtocol, HeldHeadTransport
from spillgate.stream_cost import DONE
from spillgate.web import REQUEST_ID, error_parts

log = logging.getLogger(__name__)

_JSON_TAIL: Final = b"content-type: application/json\r\n"
_SSE_TAIL: Final = (b"cache-control: no-cache\r\ncontent-type: text/event-stream; "
                    b"charset=utf-8\r\ntransfer-encoding: chunked\r\n")
_CLOSE: Final = b"connection: close\r\n"
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_REQUEST_ID: Final = REQUEST_ID.encode("latin-1")
_NAMES: dict[str, bytes] = {}  # header names as sent, built once: the service uses a few


def _header_lines(headers: Mapping[str, str]) -> list[bytes]:
    """Header lines, checked as uvicorn checks them (no response splitting)."""
    lines = []
    for name, value in headers.items():
        raw = value.encode("latin-1")
        if HEADER_VALUE_RE.search(raw):
            raise InternalError("internal error")
        encoded = _NAMES.get(name)
        if encoded is None:
            encoded = name.lower().encode("latin-1")
            if HEADER_RE.search(encoded):
                raise InternalError("internal error")
            _NAMES[name] = encoded
        lines.append(b"%s: %s\r\n" % (encoded, raw))
    return lines


class HotExchange:
    """One hot request on a connection. The protocol holds it as its current cycle, so
    uvicorn's own bookkeeping (pipelining, shutdown, head refusals) reads the same fields."""

    __slots__ = ("_body_waiter", "_cancelled", "_chunks", "_protocol", "_size", "_started",
                 "_task", "_transport", "cap", "disconnected", "keep_alive", "more_body",
                 "response_complete", "waiting_for_100_continue")

    def __init__(self, protocol: HotProtocol, keep_alive: bool, expect_100: bool,
                 cap: int) -> None:
        self._protocol = protocol
        self.cap = cap  # the body's size limit: beyond it nothing more is kept
        self._transport: HeldHeadTransport = protocol.transport  # type: ignore[assignment]
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100
        self._chunks: list[bytes] = []
        self._size = 0
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[object] | None = None  # the block `watch` guards
        self._cancelled = False
        self._started = False  # a stream's head has been written

    # --- the protocol's side -------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        if self.response_complete:
            return
        self._size += len(chunk)
        if self._size <= self.cap:  # beyond it nothing more is kept: the answer will be 413
            self._chunks.append(chunk)
        else:
            self._wake()

    def end(self) -> None:
        self.more_body = False
        self._wake()

    def client_gone(self) -> None:
        if self.response_complete:
            return
        self.disconnected = True
        self._wake()
        self._cancel_watched()

    def _cancel_watched(self) -> None:
        task = self._task
        if task is not None and not self._cancelled:
            self._cancelled = True
            task.cancel()

    def _wake(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the route's side (spillgate.api.hot.Channel) ------------------------------------
    async def read_body(self, headers: Mapping[str, str], cap: int) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise PayloadTooLarge(f"request body exceeds the {cap}-byte limit")
        while True:
            if self.disconnected:
                raise ClientClosed("the client closed the connection")
            if self._size > cap:
                raise PayloadTooLarge(f"request body exceeds the {cap}-byte limit")
            if not self.more_body:
                chunks, self._chunks = self._chunks, []  # a kept connection keeps no body
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self.waiting_for_100_continue:
                self.waiting_for_100_continue = False
                if not self._transport.is_closing():
                    self._transport.write(_CONTINUE)
            self._body_waiter = self._protocol.loop.create_future()
            await self._body_waiter
            self._body_waiter = None

    def watch(self) -> HotExchange:
        return self

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        if self.disconnected:  # gone already: cancelled at the block's first wait, as a
            self._protocol.loop.call_soon(self._cancel_watched)  # watcher would cancel it

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        task, self._task = self._task, None
        cancelled, self._cancelled = self._cancelled, False
        # Our own cancel becomes ClientClosed; anyone else's stays a cancellation.
        if isinstance(exc, asyncio.CancelledError) and cancelled and task is not None \
                and task.uncancel() == 0:
            raise ClientClosed("the client closed the connection") from None

    # --- writing the answer ----------------------------------------------------------------
    def _head(self, status: int, lines: list[bytes], tail: bytes) -> list[bytes]:
        head = [STATUS_LINE[status], *_default_lines(self._protocol), *lines, tail]
        if not self.keep_alive:
            head.append(_CLOSE)
        head.append(b"\r\n")
        return head

    def respond(self, status: int, headers: Mapping[str, str], rid: str, body: bytes) -> None:
        """A whole answer in one write (an error after a stream's head: the connection ends)."""
        if self._started:
            self._cut()
            return
        if self.disconnected or self.response_complete:
            return
        lines = _header_lines(headers)
        lines.append(b"%s: %s\r\ncontent-length: %d\r\n" % (_REQUEST_ID, rid.encode(),
                                                                len(body)))
        head = self._head(status, lines, _JSON_TAIL)
        head.append(body)
        self._transport.write_whole(b"".join(head))
        self._complete()

    async def stream(self, reply: service.StreamReply, rid: str) -> None:
        """A stream's chunks as they come, chunked; the piece that ends with `data: [DONE]`
        leaves with the end of the answer, in one write (as api/hot.py's `send_stream`)."""
        chunks, last = reply.chunks, b""
        try:
            lines = _header_lines(reply.headers)
            lines.append(b"%s: %s\r\n" % (_REQUEST_ID, rid.encode()))
            self._started = True
            if not self.disconnected:  # the head is held for the first chunk (held_head.py)
                self._transport.write(b"".join(self._head(200, lines, _SSE_TAIL)))
            async with self.watch():
                async for chunk in chunks:
                    if chunk.endswith(DONE):
                        last = chunk
                        break
                    await self._write_chunk(chunk)
        except ClientClosed:
            return  # the answer had started: nothing to tell a client that is gone
        finally:  # cancelled at a write, the relay is parked at a `yield`: close it (it settles)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        if not self.disconnected:
            self._transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last) if last
                                  else b"0\r\n\r\n")
        self._complete()

    async def _write_chunk(self, chunk: bytes) -> None:
        if not chunk:  # an empty chunk would end the answer (`0\r\n\r\n`)
            return
        flow = self._protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()  # a slow reader holds the relay here (the upstream waits too)
        if not self.disconnected:
            self._transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def _complete(self) -> None:
        self.response_complete = True
        self._chunks = []  # a body never read (a refusal before it): not kept either
        if self.disconnected:
            return
        if not self.keep_alive:
            self._transport.close()
        self._protocol.on_response_complete()

    def _cut(self) -> None:
        if not self.response_complete:
            self.response_complete = True
            self._transport.close()

    def fail(self, rid: str) -> None:
        """The answer cannot be given as planned. Not begun: a 500 in the error shape, and
        the connection ends after it (uvicorn's answer to a failed app); begun (a stream):
        the connection ends, so the client sees a cut answer, not a complete one."""
        if self._started or self.response_complete or self.disconnected:
            self._cut()
            return
        self.keep_alive = False
        status, headers, body = error_parts(InternalError("internal error"), None)
        self.respond(status, headers, rid, body)


_defaults: tuple[object, list[bytes]] = (None, [])


def _default_lines(protocol: HotProtocol) -> list[bytes]:
    """The server's default headers (date) as lines; uvicorn replaces the list each second."""
    global _defaults
    current = protocol.server_state.default_headers
    if _defaults[0] is not current:
        _defaults = (current, [b"%s: %s\r\n" % (n, v) for n, v in current])
    return _defaults[1]


class HotProtocol(HeldHeadProtocol):
    """uvicorn's httptools protocol, serving POSTs to the hot routes without ASGI."""

    hot: ClassVar[Mapping[bytes, HotRoute]] = {}
    _hot: HotExchange | None = None  # the latest hot request on this connection

    def on_headers_complete(self) -> None:
        route = self._hot_route()
        if route is None:
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        exchange = HotExchange(self, keep_alive, self.expect_100_continue,
                               route.node.limits.max_body_bytes)
        self.cycle = self._hot = exchange  # type: ignore[assignment]
        serving = _serve(route, request_headers(self.headers), exchange)
        task = self.loop.create_task(serving, context=contextvars.Context()) \
            if self.config.reset_contextvars else self.loop.create_task(serving)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _hot_route(self) -> HotRoute | None:
        hot = self.hot
        if not hot or self.parser.get_method() != b"POST" or self.root_path \
                or self.limit_concurrency is not None or self.parser.should_upgrade():
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None  # pipelined behind an unfinished answer: uvicorn queues it
        return hot.get(self.url.partition(b"?")[0])

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if type(cycle) is HotExchange:
            cycle.feed(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if type(cycle) is HotExchange:
            cycle.end()
        else:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        # The exchange, even when a pipelined request's cycle has taken `cycle`'s place.
        hot, self._hot = self._hot, None
        if hot is not None:
            hot.client_gone()
            if self.cycle is hot:  # type: ignore[comparison-overlap]
                self.cycle = None  # type: ignore[assignment]
        super().connection_lost(exc)


async def _serve(route: HotRoute, headers: dict[str, str], exchange: HotExchange) -> None:
    rid = new_request_id()
    try:
        try:
            reply = await route.answer(headers, exchange, rid)
            if isinstance(reply, service.StreamReply):
                await exchange.stream(reply, rid)
            else:
                exchange.respond(200, reply.headers, rid, orjson.dumps(reply.body))
        except ApiError as exc:
            status, error_headers, body = error_parts(exc, None)
            exchange.respond(status, error_headers, rid, body)
    except Exception as exc:  # writing the answer failed: one line, never request content
        log.error("unhandled error on request %s: %s", rid, describe(exc))
        exchange.fail(rid)
    except BaseException:  # cancelled (a forced shutdown)
        exchange.fail(rid)
        raise
