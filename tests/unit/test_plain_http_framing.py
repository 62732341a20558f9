"""The aiohttp-free client (backends/plain_http.py) against generated answers: any JSON body,
framed by content-length, chunked (random chunk sizes, chunk extensions, trailers) or the
close, gzip'd or not, with extra header fields, written to the socket in random pieces with
pauses between them, and any status. Whatever aiohttp (the path it replaces, the reference
here) makes of the same bytes, the plain path must make too: the same (status, JSON) or the
same UpstreamFailure status. A real loopback server; hypothesis picks the shapes."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spillgate.backends.base import UpstreamFailure
from spillgate.backends.http import Timeouts, UpstreamHttp

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)
BODIES = st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, max_size=5)
STATUSES = st.sampled_from([200, 200, 200, 201, 400, 404, 422, 429, 500, 502, 503])


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(the answer's bytes, whether the server closes after it)."""
    status = draw(STATUSES)
    body = orjson.dumps(draw(BODIES))
    fields = [b"content-type: application/json"]
    if draw(st.booleans()):
        body = gzip.compress(body)
        fields.append(b"Content-Encoding: gzip")
    fields += [b"x-extra-%d: %s" % (i, b"v" * draw(st.integers(0, 30)))
               for i in range(draw(st.integers(0, 3)))]
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    closes = framing == "close" or draw(st.booleans())
    if closes:
        fields.append(b"connection: close")
    if framing == "length":
        fields.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        payload = _chunked(body, draw(st.lists(st.integers(1, 40), max_size=8)),
                           extension=draw(st.booleans()), trailer=draw(st.booleans()))
    else:
        payload = body
    head = b"HTTP/1.1 %d X\r\n" % status + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    return head + payload, closes


def _chunked(body: bytes, sizes: list[int], *, extension: bool, trailer: bool) -> bytes:
    out, at = [], 0
    for size in [*sizes, len(body)]:
        piece = body[at:at + size]
        if not piece:
            break
        ext = b";name=value" if extension else b""
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        at += len(piece)
    out.append(b"0\r\n" + (b"x-trailer: 1\r\n" if trailer else b"") + b"\r\n")
    return b"".join(out)


async def _exchange(answer: bytes, closes: bool, cuts: list[int], plain: bool,
                    ) -> tuple[str, Any]:
    """One call through a server that writes `answer` in pieces cut at `cuts`."""

    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await answer_one(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def answer_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        start = 0
        for cut in [*sorted(set(cuts)), len(answer)]:
            if start < cut <= len(answer):
                writer.write(answer[start:cut])
                await writer.drain()
                await asyncio.sleep(0)  # let the client read a piece on its own
                start = cut
        if not closes:
            await reader.read()  # keep the connection until the client leaves

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = UpstreamHttp(f"http://127.0.0.1:{port}/v1", timeouts=Timeouts(2.0, 5.0),
                        max_connections=2)
    assert http._plain is not None  # a plain-http upstream takes the plain path
    if not plain:
        http._plain = None  # the aiohttp path: the reference
    try:
        status, data = await http.post_json("/chat/completions", {"model": "m"})
        return "ok", (status, data)
    except UpstreamFailure as exc:
        return "failure", exc.upstream_status
    finally:
        await http.aclose()
        server.close()
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers(), cuts=st.lists(st.integers(1, 400), max_size=6))
def test_the_plain_client_reads_any_framing_as_aiohttp_does(
        answer: tuple[bytes, bool], cuts: list[int]) -> None:
    raw, closes = answer
    plain = asyncio.run(_exchange(raw, closes, cuts, plain=True))
    reference = asyncio.run(_exchange(raw, closes, cuts, plain=False))
    assert plain == reference
