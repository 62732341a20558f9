"""The engine's HTTP face: OpenAI routes, /health and /metrics over one Scheduler.

Every request is parsed from raw bytes (bodies.py) so errors are OpenAI-shaped 400s, then
turned into a scheduler Job (service.py). A client that goes away is noticed either by the
streaming response being cancelled or by a watcher waiting for `http.disconnect`; both
cancel the ticket, which frees the sequence slot at the next decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from spillgate.engines.llamacpp.bodies import ChatBody, CompletionBody, parse
from spillgate.engines.llamacpp.decoder import DecoderProcess
from spillgate.engines.llamacpp.logprobs import TokenLogprob, text_length
from spillgate.engines.llamacpp.metrics import CONTENT_TYPE
from spillgate.engines.llamacpp.scheduler import Chunk, Job, Scheduler, Ticket, TicketCancelled
from spillgate.engines.llamacpp.service import Engine
from spillgate.engines.llamacpp.shapes import DONE, Kind, Reply, sse, sse_error
from spillgate.engines.llamacpp.tools import as_stream, with_tool_calls
from spillgate.errors import ApiError, InvalidRequest
from spillgate.web import JSONResponse, install_error_handlers

DecodeLoop = Scheduler | DecoderProcess  # a decode thread here, or a decode process


def create_app(engine: Engine, scheduler: DecodeLoop) -> FastAPI:
    """The ASGI app; the lifespan starts and stops the decode thread (or process)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="spillgate llama.cpp engine", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    created = int(time.time())

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = parse(await request.body(), ChatBody)
        job = engine.chat_job(body)
        if engine.calls_tools(body):  # answered whole, then read back into tool_calls
            whole = await _generate(request, scheduler, job, "chat", body.model, False, False)
            return tool_answer(whole, body.stream, body.include_usage())
        return await _generate(request, scheduler, job, "chat",
                               body.model, body.stream, body.include_usage())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse(await request.body(), CompletionBody)
        return await _generate(request, scheduler, engine.completion_job(body), "completion",
                               body.model, body.stream, body.include_usage())

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        raise InvalidRequest(f"`{engine.served_name}` is a generative model served without "
                             "embeddings; use an embedding model", param="model",
                             code="embeddings_not_supported")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{
            "id": engine.served_name, "object": "model", "created": created,
            "owned_by": "spillgate", "max_model_len": engine.n_ctx}]})

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = scheduler.alive
        # `unsupported`: request features the gateway must not send here (it spills them).
        return JSONResponse({"status": "ok" if ok else "failed",
                             "unsupported": sorted(engine.unsupported())},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(await scheduler.metrics_text(), media_type=CONTENT_TYPE)

    return app


async def _generate(request: Request, scheduler: DecodeLoop, job: Job, kind: Kind, model: str,
                    stream: bool, include_usage: bool) -> Response:
    ticket = scheduler.submit(job, asyncio.get_running_loop())
    reply = Reply.new(kind, model)
    if stream:
        return _EventStream(_stream(request, ticket, reply, include_usage),
                            media_type="text/event-stream", headers={"cache-control": "no-cache"})
    async with _cancel_on_disconnect(request, ticket):
        parts: list[str] = []
        logprobs: list[TokenLogprob] | None = None if job.logprobs is None else []
        while True:
            try:
                chunk = await ticket.next()
            except TicketCancelled:  # the client is gone; nobody will read this
                return Response(status_code=499)
            parts.append(chunk.text)
            if logprobs is not None:
                logprobs.extend(chunk.logprobs)
            if chunk.finish_reason is not None:
                return JSONResponse(reply.body("".join(parts), chunk, logprobs))


async def _stream(request: Request, ticket: Ticket, reply: Reply,
                  include_usage: bool) -> AsyncIterator[bytes]:
    wants_logprobs = ticket.job.logprobs is not None
    offset = 0  # where the next token's text starts (completions' text_offset)
    async with _cancel_on_disconnect(request, ticket):
        if reply.kind == "chat":
            yield sse(reply.chunk(None, role=True, with_usage_field=include_usage))
        while True:
            try:
                chunk = await ticket.next()
            except ApiError as error:  # the status line is gone: report in the stream
                yield sse_error(error) + DONE
                return
            except TicketCancelled:  # the client is gone
                return
            if chunk.text or chunk.logprobs:
                logprobs = reply.logprobs(chunk.logprobs if wants_logprobs else None, offset)
                offset += text_length(chunk.logprobs)
                yield sse(reply.chunk(chunk.text, with_usage_field=include_usage,
                                      logprobs=logprobs))
            if chunk.finish_reason is not None:  # the last frames and [DONE]: one piece
                yield b"".join(_final_frames(reply, chunk, include_usage)) + DONE
                return


class _EventStream(StreamingResponse):
    """Starlette's StreamingResponse, except that the piece ending with `data: [DONE]`
    (always the stream's last) leaves with the response's end, in one write. A client that
    stops reading at [DONE], as the gateway's relay does, then finds the answer complete and
    keeps the connection for its next request instead of closing it and connecting again."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        last = b""
        async for chunk in self.body_iterator:
            piece = chunk.encode(self.charset) if isinstance(chunk, str) else bytes(chunk)
            if piece.endswith(DONE):  # the generator ends right after it
                last = piece
                continue
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": last, "more_body": False})


@contextlib.asynccontextmanager
async def _cancel_on_disconnect(request: Request, ticket: Ticket) -> AsyncIterator[None]:
    """While the body runs, a watcher cancels the ticket if the client goes away; leaving the
    block (finished, failed, or cancelled by the server) cancels it too (a no-op when done)."""

    async def watch() -> None:
        # Waits on the ASGI channel itself (the body was read before this block): the server
        # answers `http.disconnect` the moment the client goes. Polling every 200 ms kept a
        # preempted batch line decoding beside a live request for up to one poll.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        ticket.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
        ticket.cancel()


def tool_answer(whole: Response, stream: bool, include_usage: bool) -> Response:
    """A whole answer with its text read back into tool_calls, as JSON or as SSE frames."""
    if whole.status_code != 200:  # the client left (499): nothing to convert
        return whole
    reply = with_tool_calls(orjson.loads(bytes(whole.body)))
    if not stream:
        return JSONResponse(reply)
    frames = b"".join(sse(c) for c in as_stream(reply, include_usage)) + DONE
    return Response(frames, media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _final_frames(reply: Reply, last: Chunk, include_usage: bool) -> list[bytes]:
    frames = [sse(reply.chunk(None if reply.kind == "chat" else "", last.finish_reason,
                              with_usage_field=include_usage))]
    if include_usage:
        frames.append(sse(reply.usage_chunk(last)))
    return frames
