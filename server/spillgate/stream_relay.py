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


async def close_stream(stream: AsyncIterator[JSON] | AsyncIterator[list[JSON]]) -> None:
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
    A stream that ends settles before its last frames, which carry its cost (stream_cost).
    The chunks one upstream read brought leave in one piece (one write, one wake-up of the
    client); none waits for the next read."""
    status, tally = CLIENT_CLOSED, _Tally(life, record, want_usage, ticket)
    try:
        tally.add(opened.head)
        if tally.out:
            yield tally.take()
        async for batch in opened.rest:
            tally.add(batch)
            if tally.out:
                yield tally.take()
        status = 200
        await _settle_stream(life, record, opened, status, tally, began)
        cache = life.node.cache
        if cache is not None and tally.collected is not None:  # stored only when it completed
            cache.remember_stream(ticket, tally.collected, record)
        yield stream_cost.closing(record, tally.usage_chunk)
    except ApiError as exc:
        status = exc.status
        log.warning("stream from %s failed after first byte: %s", record.backend, exc.message)
        # Never a silent clean finish: the client sees an OpenAI-shaped error event.
        await _settle_stream(life, record, opened, status, tally, began)
        yield tally.take() + stream_cost.comment(record) + sse(exc.body())
    except Exception as exc:  # a malformed chunk, a bug: one line, an error event, a 500 row
        status = 500
        log.error("stream of request %s failed: %s", record.request_id, describe(exc))
        await _settle_stream(life, record, opened, status, tally, began)
        yield tally.take() + stream_cost.comment(record) + sse(
            InternalError("internal error; the stream was cut short").body())
    finally:  # the client went away (or a frame above failed): settle now if not yet
        await _settle_stream(life, record, opened, status, tally, began)


class _Tally:
    """What a stream has relayed so far: output tokens seen (the cost clock's progress),
    the upstream's usage, the usage chunk held back until its cost is known, the response
    cache's collector, and the frames not sent yet."""

    __slots__ = ("collected", "life", "out", "record", "seen_tokens", "usage", "usage_chunk",
                 "want_usage")

    def __init__(self, life: RequestLife, record: RequestRecord, want_usage: bool,
                 ticket: Ticket) -> None:
        self.life, self.record, self.want_usage = life, record, want_usage
        cache = life.node.cache
        self.collected = None if cache is None else cache.collector(ticket)
        self.seen_tokens = 0
        self.usage: Usage | None = None
        self.usage_chunk: JSON | None = None
        self.out: list[bytes] = []

    def add(self, chunks: list[JSON]) -> None:
        """Count `chunks` and queue their SSE frames, in order. A chunk that breaks this
        leaves the frames before it queued: they go out before the error event."""
        out = self.out
        for chunk in chunks:
            if self.collected is not None:
                self.collected.add(chunk)
            if "usage" in chunk and chunk["usage"] and not chunk.get("choices"):
                self.usage = usage_of(chunk["usage"])
                self.usage_chunk = chunk if self.want_usage else None  # sent with its cost
            else:
                tokens = len(chunk.get("choices") or ())
                # + the prompt, at first output
                self.life.node.accountant.progress(self.record, tokens)
                self.seen_tokens += tokens
                out.append(sse(chunk))

    def take(self) -> bytes:
        """The queued frames as one piece (one write)."""
        out, self.out = self.out, []
        return out[0] if len(out) == 1 else b"".join(out)


async def _settle_stream(life: RequestLife, record: RequestRecord, opened: dispatch.OpenStream,
                         status: int, tally: _Tally, began: float) -> None:  # fmt: skip
    if life.settled:
        return

    async def settle() -> None:
        await close_stream(opened.rest)
        record.latency_s = time.perf_counter() - began
        record.usage = tally.usage or Usage(record.prompt_estimate, 0, tally.seen_tokens,
                                            measured=False)
        await life.settle(status)

    # Shielded whole: a client gone mid-stream re-cancels every await here (anyio's cancel
    # scope), which must not cut the row, the slot or the metrics short.
    await asyncio.shield(settle())


def sse(obj: JSON) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
