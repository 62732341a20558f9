"""The hot routes (POST /v1/chat/completions, /v1/completions, /v1/embeddings) as plain ASGI.

FastAPI's middleware stack, router and request/dependency machinery cost a request more CPU
than the gateway's own work on the way to the upstream (scripts/bench_gateway.py, part d).
`Gateway` (the app `create_app` builds) hands these three routes straight to a `HotRoute`
and everything else (admin, health, metrics, /v1/models) to FastAPI. Each HotRoute is also
registered as a FastAPI route, so a request FastAPI does route (under a root_path, a trailing
slash's redirect) is served by the same handler, and a GET still gets FastAPI's 405. Under
the node's own server most of these requests never reach ASGI at all: its protocol serves
them with `HotRoute.answer` directly (api/hot_protocol.py); ASGI remains for the rest.

What the route does, as the FastAPI route did: a fresh request id; authentication; the body
read against the size cap (413 before reading when the declared length exceeds it); a client
gone while its body arrives, or while a non-stream answer is prepared, ends as 499 and cancels
the upstream call; every refusal in the OpenAI error shape with x-request-id (and Retry-After);
a stream answered as `text/event-stream` by `send_stream`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from spillgate import service
from spillgate.api.deps import new_request_id
from spillgate.api.disconnect import cancelled_on_disconnect
from spillgate.errors import ApiError, ClientClosed, InternalError, PayloadTooLarge, describe
from spillgate.life import RequestLife
from spillgate.stream_cost import DONE
from spillgate.types import Client, Endpoint
from spillgate.web import REQUEST_ID, error_response

log = logging.getLogger(__name__)

HOT_ROUTES: Final[dict[str, Endpoint]] = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
Authenticate = Callable[[str | None], Awaitable[Client]]
_JSON_TYPE: Final = (b"content-type", b"application/json")
_REQUEST_ID: Final = REQUEST_ID.encode("latin-1")
# Header names as sent (lower case, bytes), built once: the service's names are a small set.
_NAMES: dict[str, bytes] = {}


# What Starlette's StreamingResponse sent after the service's headers, as it sent it.
_SSE_TAIL: Final = [(b"cache-control", b"no-cache"),
                    (b"content-type", b"text/event-stream; charset=utf-8")]


def _name(header: str) -> bytes:
    encoded = _NAMES[header] = header.lower().encode("latin-1")
    return encoded


def _raw_headers(headers: dict[str, str], rid: str,
                 tail: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    raw = [(_NAMES.get(k) or _name(k), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((_REQUEST_ID, rid.encode("latin-1")))
    raw += tail
    return raw


async def send_stream(reply: service.StreamReply, raw: list[tuple[bytes, bytes]],
                      receive: Receive, send: Send) -> None:
    """Send a stream's chunks as they come: a plain ASGI loop, where Starlette's
    StreamingResponse cost every stream an anyio task group and a second task listening for
    the disconnect (scripts/bench_gateway_ab.py --stream). The relay still stops when the
    client leaves: `cancelled_on_disconnect` cancels this task, the relay settles the row as
    499 in its `finally`, and nothing more is sent. A slow reader holds the loop at `send`
    (the server's flow control), so the upstream is read no faster than the client reads.
    The piece that ends with `data: [DONE]` is the stream's last (the source has settled
    before it): it leaves with the response's end, in one write instead of two."""
    chunks = reply.chunks
    last = b""
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    try:
        async with cancelled_on_disconnect(receive):
            async for chunk in chunks:
                if chunk.endswith(DONE):
                    last = chunk
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except ClientClosed:
        return  # the answer had started: nothing to tell a client that is gone
    finally:  # cancelled at `send`, the relay is parked at a `yield`: close it (it settles)
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    # Outside the watcher: completing the response wakes it with a (false) disconnect.
    await send({"type": "http.response.body", "body": last, "more_body": False})


class Channel(Protocol):
    """How a hot request's body arrives and how its client's departure is noticed: the ASGI
    channel (`AsgiChannel`) or the node's own HTTP protocol (api/hot_protocol.py)."""

    async def read_body(self, headers: Mapping[str, str], cap: int) -> bytes: ...

    def watch(self) -> AbstractAsyncContextManager[None]:
        """Run the block; cancel it and raise ClientClosed if the client leaves first."""
        ...


class AsgiChannel:
    __slots__ = ("receive",)

    def __init__(self, receive: Receive) -> None:
        self.receive = receive

    async def read_body(self, headers: Mapping[str, str], cap: int) -> bytes:
        return await read_body(self.receive, headers, cap)

    def watch(self) -> cancelled_on_disconnect:
        return cancelled_on_disconnect(self.receive)


class HotRoute:
    """One hot route: `answer` serves it on any channel; calling it serves it as ASGI."""

    def __init__(self, node: service.Node, authenticate: Authenticate,
                 endpoint: Endpoint) -> None:
        self.node = node
        self.authenticate = authenticate
        self.endpoint: Endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        try:
            reply = await self.answer(request_headers(scope["headers"]), AsgiChannel(receive),
                                      rid)
        except ApiError as exc:
            await error_response(exc, rid)(scope, receive, send)
            return
        if isinstance(reply, service.StreamReply):
            await send_stream(reply, _raw_headers(reply.headers, rid, _SSE_TAIL), receive, send)
            return
        body = orjson.dumps(reply.body)
        raw = _raw_headers(reply.headers, rid, [(b"content-length", b"%d" % len(body)),
                                                _JSON_TYPE])
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def answer(self, headers: dict[str, str], channel: Channel,
                     rid: str) -> service.Reply | service.StreamReply:
        """The reply, or an ApiError to answer with (an unexpected failure becomes a logged
        500: one line, type and place only, never request content)."""
        try:
            return await self._serve(headers, channel, rid)
        except ApiError:
            raise
        except Exception as exc:
            log.error("unhandled error on request %s: %s", rid, describe(exc))
            raise InternalError("internal error") from None

    async def _serve(self, headers: dict[str, str], channel: Channel,
                     rid: str) -> service.Reply | service.StreamReply:
        node = self.node
        # A refusal here (401, 413, a client gone mid-body) is counted like any other exit.
        async with RequestLife(node, rid):
            client = await self.authenticate(headers.get("authorization"))
            raw = await channel.read_body(headers, node.limits.max_body_bytes)
        async with channel.watch():  # a client gone: upstream cancelled, 499
            return await service.serve(node, self.endpoint, raw, headers, client, rid)


def request_headers(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's header fields by name, the first of a repeated one: what Starlette's
    `Headers(scope=scope).get` answers, in one pass over the fields instead of a scan (and a
    KeyError for each absent one) per lookup; the path looks up about ten per request."""
    headers: dict[str, str] = {}
    for name, value in fields:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


async def read_body(receive: Receive, headers: Mapping[str, str], cap: int) -> bytes:
    """The body, refused with 413 before reading when its declared length exceeds the cap,
    or as soon as what arrived does; 499 if the client leaves before it is complete."""
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"request body exceeds the {cap}-byte limit")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosed("the client closed the connection")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"request body exceeds the {cap}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Gateway(FastAPI):
    """FastAPI, with the hot routes served before its middleware and router."""

    hot: dict[str, HotRoute]

    def serve_hot(self, node: service.Node, authenticate: Authenticate) -> None:
        self.hot = {path: HotRoute(node, authenticate, ep) for path, ep in HOT_ROUTES.items()}
        for path, route in self.hot.items():
            # An ASGI object (not a function) as a route's endpoint is called as ASGI.
            self.router.add_route(path, route, methods=["POST"])  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = getattr(self, "hot", {}).get(scope["path"])
            if route is not None:
                scope["app"] = self
                await route(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
