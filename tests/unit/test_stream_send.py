"""A stream's pieces as the client's connection sees them: api/hot.py's `send_stream` makes
each piece one ASGI body message (one write), the piece that ends with `data: [DONE]` leaves
with the response's end, and the relay makes what one upstream read brought one piece."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from spillgate.api.hot import send_stream
from spillgate.backends.base import UpstreamCall
from spillgate.fakes.backend import FakeBackend
from spillgate.service import StreamReply
from spillgate.stream_cost import DONE
from spillgate.types import JSON
from tests.harness import LOCAL, Harness, harness, row_of

CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
CLOSING = b": x-spillgate-cost-usd=0.00000000\n\n" + DONE
ERROR = b'data: {"error":{"message":"cut short"}}\n\n'


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def sent_messages(pieces: list[bytes], closed: list[bool]) -> list[dict[str, Any]]:
    async def source() -> AsyncIterator[bytes]:
        try:
            for piece in pieces:
                yield piece
        finally:
            closed.append(True)

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await send_stream(StreamReply(source()), [], never_disconnects, send)
    return messages


async def test_the_closing_piece_ends_the_response_in_the_same_message() -> None:
    closed: list[bool] = []
    messages = await sent_messages([CONTENT, CONTENT, CLOSING], closed)
    assert messages[0]["type"] == "http.response.start"
    assert [(m["body"], m["more_body"]) for m in messages[1:]] == [
        (CONTENT, True), (CONTENT, True), (CLOSING, False)]
    assert closed == [True]  # the source ran its `finally` (a relay settles there)


async def test_a_stream_cut_short_still_ends_with_an_empty_last_message() -> None:
    closed: list[bool] = []
    messages = await sent_messages([CONTENT, ERROR], closed)
    assert [(m["body"], m["more_body"]) for m in messages[1:]] == [
        (CONTENT, True), (ERROR, True), (b"", False)]
    assert closed == [True]


class BurstBackend(FakeBackend):
    """The local engine of a stream whose reads bring several chunks at once: the first
    chunk alone, then three content chunks and the finish together, then the usage."""

    def stream_batches(self, call: UpstreamCall, body: JSON) -> AsyncIterator[list[JSON]]:
        return self._batches(call)

    async def _batches(self, call: UpstreamCall) -> AsyncIterator[list[JSON]]:
        base = {"id": f"fake-{call.request_id}", "object": "chat.completion.chunk",
                "created": 0, "model": call.upstream_model}

        def delta(text: str, finish: str | None = None) -> JSON:
            return {**base, "choices": [{"index": 0, "delta": {"content": text},
                                         "finish_reason": finish}]}

        yield [delta("a")]
        yield [delta("b"), delta("c"), delta("d"), delta("", "stop")]
        yield [{**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5,
                                                 "total_tokens": 10}}]


async def asgi_stream(h: Harness, body: JSON) -> list[dict[str, Any]]:
    """The ASGI messages the app sends for one request (each body message is one write)."""
    raw = orjson.dumps(body)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", b"%d" % len(raw))],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await never_disconnects()

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await h.app(scope, receive, send)
    return messages


async def test_the_chunks_of_one_read_leave_in_one_write_and_all_are_counted(
        tmp_path: Path) -> None:
    local = BurstBackend(LOCAL, "local")
    async with harness(tmp_path, allow_anonymous_loopback=True, local_backend=local) as h:
        messages = await asgi_stream(h, {"model": "local", "stream": True, "messages": [
            {"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}})
        assert messages[0]["status"] == 200
        pieces = [m["body"] for m in messages[1:]]
        assert [m["more_body"] for m in messages[1:]] == [True, True, False]
        texts = [[orjson.loads(line[6:])["choices"][0]["delta"]["content"]
                  for line in piece.split(b"\n\n") if line.startswith(b"data: {")]
                 for piece in pieces[:2]]
        assert texts == [["a"], ["b", "c", "d", ""]]  # the burst: one piece, in order
        assert pieces[2].startswith(b'data: {"id"') and pieces[2].endswith(DONE)
        await h.ledger.flush()
        row = await row_of(h, dict(messages[0]["headers"])[b"x-request-id"].decode())
        assert row["status"] == 200 and row["completion_tokens"] == 5
