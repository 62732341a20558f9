"""A stream's relay, from the first upstream chunk to the last frame: forward the chunks,
count progress for the cost clock, feed the response cache, and settle exactly once whether
the stream ends, fails or the client leaves; a stream that ends carries its cost
(spillgate.stream_cost) before `data: [DONE]`. The request path (spillgate.service) opens
the stream and hands it here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

import orjson

from spillgate import dispatch, stream_cost
from spillgate.cache.step import Ticket
from spillgate.errors import ApiError, InternalError, describe
from spillgate.ledger.record import RequestRecord, Usage
from spillgate.life import CLIENT_CLOSED, RequestLife
from spillgate.types import JSON

log = logging.getLogger("spillgate.service")  # the request path's logger, as before the move


def wants_usage(body: JSON) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def usage_of(raw: object) -> Usage | None:
    """The upstream's usage, or None when absent or malformed (the upstream's fault: 502)."""
    try:
        return Usage.from_openai(raw)
    except (TypeError, ValueError):
        return None


async def prefixed(first: bytes, rest: AsyncGenerator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def close_stream(stream: AsyncIterator[JSON]) -> None:
    """Close an upstream stream at once (a client that went away frees the engine's slot
    now, not when the garbage collector gets to the generator)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def relay(
    life: RequestLife, record: RequestRecord, opened: dispatch.OpenStream, want_usage: bool,
    began: float, ticket: Ticket,
) -> AsyncGenerator[bytes]:
    """Forward chunks; settle exactly once whether the stream ends, fails or is cancelled.
    A stream that ends settles before its last frames, which carry its cost (stream_cost)."""
    status, seen_tokens, usage, usage_chunk = CLIENT_CLOSED, 0, None, None
    cache = life.node.cache
    collected = None if cache is None else cache.collector(ticket)
    try:
        async for chunk in _chunks(opened):
            if collected is not None:
                collected.add(chunk)
            if "usage" in chunk and chunk["usage"] and not chunk.get("choices"):
                usage = usage_of(chunk["usage"])
                usage_chunk = chunk if want_usage else None  # sent once its cost is known
            else:
                tokens = len(chunk.get("choices") or ())
                life.node.accountant.progress(record, tokens)  # + the prompt, at first output
                seen_tokens += tokens
                yield sse(chunk)
        status = 200
        await _settle_stream(life, record, opened, status, usage, seen_tokens, began)
        if cache is not None and collected is not None:  # stored only when it completed
            cache.remember_stream(ticket, collected, record)
        for frame in stream_cost.final_frames(record, usage_chunk):
            yield frame
        yield b"data: [DONE]\n\n"
    except ApiError as exc:
        status = exc.status
        log.warning("stream from %s failed after first byte: %s", record.backend, exc.message)
        # Never a silent clean finish: the client sees an OpenAI-shaped error event.
        await _settle_stream(life, record, opened, status, usage, seen_tokens, began)
        yield stream_cost.comment(record) + sse(exc.body())
    except Exception as exc:  # a malformed chunk, a bug: one line, an error event, a 500 row
        status = 500
        log.error("stream of request %s failed: %s", record.request_id, describe(exc))
        await _settle_stream(life, record, opened, status, usage, seen_tokens, began)
        yield stream_cost.comment(record) + sse(
            InternalError("internal error; the stream was cut short").body())
    finally:  # the client went away (or a frame above failed): settle now if not yet
        await _settle_stream(life, record, opened, status, usage, seen_tokens, began)


async def _settle_stream(life: RequestLife, record: RequestRecord, opened: dispatch.OpenStream,
                         status: int, usage: Usage | None, seen_tokens: int,
                         began: float) -> None:  # fmt: skip
    if life.settled:
        return

    async def settle() -> None:
        await close_stream(opened.rest)
        record.latency_s = time.perf_counter() - began
        record.usage = usage or Usage(record.prompt_estimate, 0, seen_tokens, measured=False)
        await life.settle(status)

    # Shielded whole: a client gone mid-stream re-cancels every await here (anyio's cancel
    # scope), which must not cut the row, the slot or the metrics short.
    await asyncio.shield(settle())


async def _chunks(opened: dispatch.OpenStream) -> AsyncIterator[JSON]:
    for chunk in opened.head:
        yield chunk
    async for chunk in opened.rest:
        yield chunk


def sse(obj: JSON) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
