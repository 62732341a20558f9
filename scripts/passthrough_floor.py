"""The Python floor for scripts/bench_gateway.py: the least a Python proxy can do per request.

A raw ASGI app under the node's own server stack (uvicorn, uvloop, httptools) that reads the
request body, posts it to the upstream on one pooled aiohttp session and returns the reply
bytes. No validation, routing, detector, ledger, metrics or headers of its own. Whatever it
adds over calling the upstream directly is what Python, this server and this client cost on
this machine; the gateway's figures are read against it, in the same run.

    .venv/bin/python scripts/passthrough_floor.py --upstream URL --port N
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

JSON_HEADERS = {"content-type": "application/json"}


class Floor:
    def __init__(self, upstream: str) -> None:
        self._target = upstream.rstrip("/") + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(Floor(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
