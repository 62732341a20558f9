"""The Python floor for scripts/bench_gateway.py: the least a Python proxy can do per request.

A raw ASGI app under the node's own server stack (uvicorn, uvloop, httptools) that reads the
request body, posts it to the upstream on one pooled aiohttp session and returns the reply
bytes. No validation, routing, detector, ledger, metrics or headers of its own. Whatever it
adds over calling the upstream directly is what Python, this server and this client cost on
this machine; the gateway's figures are read against it, in the same run.

`--raw` is the floor under that floor: no ASGI server and no HTTP client library. An asyncio
protocol parses requests with httptools and forwards each body over the gateway's own
keep-alive client (spillgate.backends.plain_http), answering with a fixed head. It keeps
connections alive and nothing else: no limits, no timeouts, no error handling a real server
needs. What it adds is what Python's event loop and two loopback hops cost here.

`--plain` keeps the ASGI server and forwards over plain_http instead of aiohttp: the
difference to `--raw` is then uvicorn's share alone.

    .venv/bin/python scripts/passthrough_floor.py --upstream URL --port N [--raw]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import httptools
import uvicorn
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from spillgate.backends.plain_http import PlainHttpPool

JSON_HEADERS = {"content-type": "application/json"}


class Floor:
    def __init__(self, upstream: str, plain: bool = False) -> None:
        self._target = upstream.rstrip("/") + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None
        self._plain = _plain_pool(upstream) if plain else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] == "GET":  # readiness
            await _respond(send, 200, b"ok")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self._plain is not None:
            answer = await self._plain[0].post(self._plain[1], body)
            await _respond(send, answer.status, answer.body)
            return
        assert self._session is not None
        async with self._session.post(self._target, data=body, headers=JSON_HEADERS) as reply:
            await _respond(send, reply.status, await reply.read())

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0))  # as many as the clients open
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RawFloor(asyncio.Protocol):
    """One client connection: requests parsed as they arrive, each forwarded in a task."""

    def __init__(self, pool: PlainHttpPool, target: bytes) -> None:
        self._pool, self._target = pool, target
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        if self._parser.get_method() == b"GET":  # readiness
            self._transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            return
        asyncio.get_running_loop().create_task(self._forward(b"".join(self._body)))

    async def _forward(self, body: bytes) -> None:
        answer = await self._pool.post(self._target, body)
        assert self._transport is not None
        self._transport.write(b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\n"
                              b"content-length: %d\r\n\r\n%s"
                              % (answer.status, len(answer.body), answer.body))


def _plain_pool(upstream: str) -> tuple[PlainHttpPool, bytes]:
    """The gateway's keep-alive client for the upstream, and the chat route's path."""
    url = urlsplit(upstream)
    assert url.hostname is not None and url.port is not None
    head = b"Host: %s\r\nContent-Type: application/json\r\n" % url.netloc.encode()
    pool = PlainHttpPool(url.hostname, url.port, head, connect_s=5.0, read_s=60.0, limit=1024)
    return pool, (url.path.rstrip("/") + "/chat/completions").encode()


async def serve_raw(upstream: str, port: int) -> None:
    pool, target = _plain_pool(upstream)
    server = await asyncio.get_running_loop().create_server(
        lambda: RawFloor(pool, target), "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--raw", action="store_true", help="no ASGI server, no client library")
    parser.add_argument("--plain", action="store_true",
                        help="the ASGI server, forwarding over plain_http (not aiohttp)")
    args = parser.parse_args()
    if args.raw:
        uvloop.run(serve_raw(args.upstream, args.port))
        return
    uvicorn.run(Floor(args.upstream, args.plain), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
