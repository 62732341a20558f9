"""A fake paid provider on 127.0.0.1 speaking the OpenAI and Anthropic wire formats.

Tests and benchmarks point backends at it instead of a real API. It answers deterministically
from the request (the reply echoes the last user message; tool calls when tools are offered
and the user asks for a tool, or tool_choice forces one), records every request it receives
(GET/DELETE /_fake/requests) so a test can check exactly what left the node, and injects
faults on demand (POST/GET/DELETE /_fake/faults; see provider_faults.Fault).

Routes: POST /v1/chat/completions, /v1/completions, /v1/embeddings, GET /v1/models (OpenAI);
POST /v1/messages (Anthropic, with its header and body checks: unknown fields, a missing
max_tokens or anthropic-version, or tool_results without their tool_use are 400s, as upstream).
Token counts are whitespace words. With `prompt_cache`, a system prompt seen before is reported
as cached prompt tokens (first sight: an Anthropic cache write), like provider prompt caching.

    python -m spillgate.fakes.provider --port 9100 [--latency-ms 20] [--prompt-cache]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from spillgate.backends.anthropic_translate import anthropic_usage, to_anthropic_response
from spillgate.fakes.provider_faults import (
    Fault,
    FaultBook,
    FaultSpecError,
    drop_connection,
    reset_connection,
    retry_after_header,
    sleep_ms,
)
from spillgate.fakes.provider_replies import (
    Prompt,
    anthropic_events,
    anthropic_problem,
    completion_chunks,
    make_reply,
    openai_chunks,
    openai_completion,
    prompt_from_anthropic,
    prompt_from_openai,
    text_completion,
)

JSON = dict[str, Any]
CREATED = 1_700_000_000  # fixed `created`: answers stay byte-for-byte reproducible


@dataclass
class FakeState:
    """Everything one fake provider remembers; one per app, nothing global."""

    prompt_cache: bool = False
    record_limit: int = 10_000
    models: tuple[str, ...] = ("fake-gpt", "fake-claude")
    faults: FaultBook = field(default_factory=FaultBook)
    requests: deque[JSON] = field(default_factory=deque)
    seen_system: set[str] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def record(self, request: web.Request, body: Any) -> None:
        if len(self.requests) >= self.record_limit:
            self.requests.popleft()
        self.requests.append({"method": request.method, "path": request.path,
                              "headers": {k.lower(): v for k, v in request.headers.items()},
                              "body": body})

    def cache_split(self, prompt: Prompt) -> tuple[int, int]:
        """(cached, cache-write) prompt tokens for this request's system prompt."""
        if not self.prompt_cache or not prompt.system_key:
            return 0, 0
        if prompt.system_key in self.seen_system:
            return prompt.system_tokens, 0
        self.seen_system.add(prompt.system_key)
        return 0, prompt.system_tokens


STATE = web.AppKey("fake_provider_state", FakeState)


def build_app(state: FakeState) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.add_routes([
        web.post("/v1/chat/completions", _chat),
        web.post("/v1/completions", _completions),
        web.post("/v1/embeddings", _embeddings),
        web.get("/v1/models", _models),
        web.get("/health", _health),  # lets a node attach to the fake as a "local engine"
        web.post("/v1/messages", _messages),
        web.get("/_fake/requests", _get_requests),
        web.delete("/_fake/requests", _clear_requests),
        web.get("/_fake/faults", _get_faults),
        web.post("/_fake/faults", _add_faults),
        web.delete("/_fake/faults", _clear_faults),
    ])
    return app


# ------------------------------------------------------------------------------ API routes

async def _chat(request: web.Request) -> web.StreamResponse:
    state, body, fault, early = await _admit(request, "openai")
    if early is not None:
        return early
    prompt = prompt_from_openai(body)
    reply = make_reply(prompt, next(state.ids))
    cached, _ = state.cache_split(prompt)
    rid = f"chatcmpl-fake{reply.serial}"
    if not body.get("stream"):
        return await _send_json(request, openai_completion(reply, prompt, rid, CREATED, cached),
                                fault)
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = openai_chunks(reply, prompt, rid, CREATED, cached if usage else None)
    return await _send_stream(request, [_sse(c) for c in chunks] + [b"data: [DONE]\n\n"], fault)


async def _completions(request: web.Request) -> web.StreamResponse:
    state, body, fault, early = await _admit(request, "openai")
    if early is not None:
        return early
    prompt = prompt_from_openai(body)
    reply = make_reply(prompt, next(state.ids))
    rid = f"cmpl-fake{reply.serial}"
    if not body.get("stream"):
        return await _send_json(request, text_completion(reply, prompt, rid, CREATED), fault)
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = completion_chunks(reply, prompt, rid, CREATED, usage)
    return await _send_stream(request, [_sse(c) for c in chunks] + [b"data: [DONE]\n\n"], fault)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    _, body, fault, early = await _admit(request, "openai")
    if early is not None:
        return early
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    dims = int(body.get("dimensions") or 16)
    data = [{"object": "embedding", "index": i, "embedding": _vector(str(x), dims)}
            for i, x in enumerate(inputs)]
    tokens = sum(len(x) if isinstance(x, list) else len(str(x).split()) for x in inputs)
    return await _send_json(request, {
        "object": "list", "data": data, "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, fault)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
            for m in state.models]
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


async def _messages(request: web.Request) -> web.StreamResponse:
    state, body, fault, early = await _admit(request, "anthropic")
    if early is not None:
        return early
    problem = anthropic_problem(body, request.headers)
    if problem is not None:
        return _anthropic_error(*problem)
    prompt = prompt_from_anthropic(body)
    reply = make_reply(prompt, next(state.ids))
    cached, written = state.cache_split(prompt)
    rid = f"msg_fake{reply.serial}"
    completion = openai_completion(reply, prompt, rid, CREATED, cached)
    if not body.get("stream"):
        answer = to_anthropic_response(completion, cache_creation_tokens=written)
        return await _send_json(request, answer, fault)
    usage = anthropic_usage(completion["usage"], written)
    events = anthropic_events(reply, completion, usage)
    return await _send_stream(
        request, [b"event: %s\ndata: %s\n\n" % (e["type"].encode(), _dumps_b(e)) for e in events],
        fault)


# ----------------------------------------------------------------------- fake control routes

async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[STATE].requests), dumps=_dumps)


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return web.json_response({"cleared": True})


async def _get_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE].faults.active()
    return web.json_response({"faults": [f.to_json() for f in faults]}, dumps=_dumps)


async def _add_faults(request: web.Request) -> web.Response:
    try:
        data = orjson.loads(await request.read())
        specs = data if isinstance(data, list) else [data]
        faults = [Fault.from_json(s) for s in specs]
    except (orjson.JSONDecodeError, FaultSpecError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[STATE].faults.add(faults)
    return await _get_faults(request)


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.set([])
    return await _get_faults(request)


# ------------------------------------------------------------------------------ wire helpers

async def _admit(
    request: web.Request, flavor: str
) -> tuple[FakeState, JSON, Fault, web.StreamResponse | None]:
    """Record the request and apply the faults that strike before any answer."""
    state = request.app[STATE]
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = None
    state.record(request, body if body is not None else raw.decode(errors="replace"))
    fault = state.faults.take(request.path)
    await sleep_ms(fault.latency_ms)
    if fault.reset:
        reset_connection(request)
        return state, {}, fault, web.StreamResponse()
    if fault.status is not None:
        return state, {}, fault, _fault_error(fault, flavor)
    if not isinstance(body, dict):
        return state, {}, fault, _error(400, "invalid_request_error", "body must be a JSON object",
                                        flavor)
    return state, body, fault, None


def _fault_error(fault: Fault, flavor: str) -> web.Response:
    status = fault.status or 500
    kind = "rate_limit_error" if status == 429 else "api_error"
    if flavor == "anthropic" and status == 529:
        kind = "overloaded_error"
    resp = _error(status, kind, f"fake provider fault: status {status}", flavor)
    resp.headers.update(retry_after_header(fault))
    return resp


def _error(status: int, kind: str, message: str, flavor: str) -> web.Response:
    if flavor == "anthropic":
        return _anthropic_error(status, kind, message)
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, dumps=_dumps)


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, dumps=_dumps)


async def _send_json(request: web.Request, body: JSON, fault: Fault) -> web.StreamResponse:
    payload = _dumps_b(body)
    await sleep_ms(fault.ttft_ms)
    if fault.cut_after is None:
        return web.Response(body=payload, content_type="application/json")
    # Promise the whole body, deliver half of it, hang up.
    resp = web.StreamResponse(headers={"content-type": "application/json"})
    resp.content_length = len(payload)
    await resp.prepare(request)
    await resp.write(payload[: len(payload) // 2])
    drop_connection(request)
    return resp


async def _send_stream(
    request: web.Request, events: list[bytes], fault: Fault
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream",
                                       "cache-control": "no-cache"})
    await resp.prepare(request)
    if not fault.shapes_stream:
        await resp.write(b"".join(events))
        await resp.write_eof()
        return resp
    await sleep_ms(fault.ttft_ms)
    # A cut never lets the terminal event ([DONE] / message_stop) through.
    cut = min(fault.cut_after, len(events) - 1) if fault.cut_after is not None else None
    for i, event in enumerate(events):
        if i == cut:
            drop_connection(request)
            return resp
        if i:
            await sleep_ms(fault.trickle_ms)
        await resp.write(event)
    await resp.write_eof()
    return resp


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text` (same text, same vector)."""
    raw = b"".join(hashlib.blake2b(f"{i}:{text}".encode(), digest_size=64).digest()
                   for i in range(dims // 16 + 1))
    values = [v / 32768.0 for v in struct.unpack(f"<{dims}h", raw[: dims * 2])]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def _sse(chunk: JSON) -> bytes:
    return b"data: " + _dumps_b(chunk) + b"\n\n"


def _dumps_b(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# --------------------------------------------------------------------- in-process and CLI use

@dataclass
class FakeProvider:
    """A running fake provider; `base_url` ends in /v1 like the backends' base URLs."""

    base_url: str
    root_url: str
    state: FakeState

    @property
    def requests(self) -> list[JSON]:
        return list(self.state.requests)

    def set_faults(self, *faults: Fault | JSON) -> None:
        self.state.faults.set([f if isinstance(f, Fault) else Fault.from_json(f) for f in faults])

    def clear_faults(self) -> None:
        self.state.faults.set([])

    def clear_requests(self) -> None:
        self.state.requests.clear()


@asynccontextmanager
async def running_fake_provider(
    port: int = 0, *, state: FakeState | None = None
) -> AsyncIterator[FakeProvider]:
    """Serve a fake provider on 127.0.0.1 (port 0: any free port) for the `async with` body."""
    state = state if state is not None else FakeState()
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        bound = runner.addresses[0][1]
        root = f"http://127.0.0.1:{bound}"
        yield FakeProvider(base_url=root + "/v1", root_url=root, state=state)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic provider on 127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="standing delay before every answer (benchmark upstream)")
    parser.add_argument("--prompt-cache", action="store_true",
                        help="report repeated system prompts as cached tokens")
    parser.add_argument("--record-limit", type=int, default=10_000,
                        help="requests kept for GET /_fake/requests (oldest dropped)")
    args = parser.parse_args(argv)
    state = FakeState(prompt_cache=args.prompt_cache, record_limit=args.record_limit)
    if args.latency_ms > 0:
        state.faults.set([Fault(latency_ms=args.latency_ms)])
    web.run_app(build_app(state), host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
