"""An OpenAI-protocol upstream's stream read as batches (`stream_batches`): the chunks one
read brought come together, in order, none held back for the next read; what came before a
failure is still handed on; lines split across reads are joined. A real aiohttp server on
loopback stands in for the engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from spillgate.backends.base import UpstreamCall, UpstreamFailure
from spillgate.backends.http import Timeouts, complete_lines
from spillgate.backends.openai_compat import OpenAICompatBackend
from spillgate.types import JSON

CALL = UpstreamCall("chat/completions", "req-1", "smollm2")
BODY: JSON = {"model": "local", "stream": True, "messages": [{"role": "user", "content": "x"}]}


def event(obj: JSON | str) -> bytes:
    data = obj.encode() if isinstance(obj, str) else orjson.dumps(obj)
    return b"data: " + data + b"\n\n"


def delta(text: str) -> JSON:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


USAGE: JSON = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4,
                                       "total_tokens": 7}}

# Each entry is one write of the upstream; the stream waits for the test between writes.
Writes = list[bytes]


@contextlib.asynccontextmanager
async def backend_over(writes: Writes,
                       gates: list[asyncio.Event]) -> AsyncIterator[OpenAICompatBackend]:
    async def handler(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await reply.prepare(request)
        for index, data in enumerate(writes):
            if index:
                await gates[index - 1].wait()
            await reply.write(data)
        return reply

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        backend = OpenAICompatBackend("local", "local", [str(server.make_url("/v1"))],
                                      timeouts=Timeouts(5, 5), max_connections=4)
        try:
            yield backend
        finally:
            await backend.aclose()


async def read_all(writes: Writes, on_batch: Callable[[list[JSON]], None]) -> None:
    gates = [asyncio.Event() for _ in writes]
    count = 0
    async with backend_over(writes, gates) as backend:
        async for batch in backend.stream_batches(CALL, BODY):
            on_batch(batch)
            gates[count].set()  # the next write leaves only once this batch is in hand
            count += 1


async def test_the_chunks_of_one_write_come_as_one_batch_in_order() -> None:
    batches: list[list[JSON]] = []
    await read_all([event(delta("a")),
                    event(delta("b")) + b": keep-alive\n\n" + event(delta("c")) + event(delta("d")),
                    event(USAGE) + event("[DONE]")], batches.append)
    assert batches == [[delta("a")], [delta("b"), delta("c"), delta("d")], [USAGE]]


async def test_what_came_before_an_error_event_is_handed_on_first() -> None:
    batches: list[list[JSON]] = []
    error = {"error": {"message": "engine fell over"}}
    with pytest.raises(UpstreamFailure, match="engine fell over"):
        await read_all([event(delta("a")), event(delta("b")) + event(error)], batches.append)
    assert batches == [[delta("a")], [delta("b")]]


async def test_a_stream_without_done_is_a_failure_after_its_chunks() -> None:
    batches: list[list[JSON]] = []
    with pytest.raises(UpstreamFailure, match="before \\[DONE\\]"):
        await read_all([event(delta("a"))], batches.append)
    assert batches == [[delta("a")]]


def test_lines_split_across_reads_are_joined() -> None:
    lines, tail = complete_lines(b"", b'data: {"a": 1}\n\ndata: {"b"')
    assert (lines, tail) == ([b'data: {"a": 1}', b""], b'data: {"b"')
    lines, tail = complete_lines(tail, b': 2}\r\n\r\n')
    assert (lines, tail) == ([b'data: {"b": 2}\r', b"\r"], b"")
    assert complete_lines(b"data: [DO", b"NE]") == ([], b"data: [DONE]")
