"""A fake vLLM server on 127.0.0.1: vLLM's OpenAI routes and its /metrics, with load you control.

Stands in for a GPU engine in tests and demos on machines without a GPU. Requests really queue:
at most `--max-concurrency` run at once (the rest wait, as in vLLM's scheduler), each takes
`--prefill-ms` to its first token and `--latency-ms` more to finish, so the reported gauges
follow real in-flight requests. /metrics speaks vLLM's exposition format (same names, labels
`model_name` and `engine`, same histogram buckets) through prometheus_client, as vLLM does.

Control: POST /_fake/load {"running": n, "waiting": m, "kv_cache_usage": x, "ttft_s": y,
"latency_s": z} — running/waiting/kv_cache_usage replace the reported gauge (null: report the
real value again); ttft_s replaces the prefill delay and latency_s the decode time of new
requests. GET shows the current overrides, DELETE clears them.

Routes: GET /v1/models, POST /v1/chat/completions (plain, or SSE with `stream: true`, usage
with `stream_options.include_usage`), POST /v1/completions, GET /health, GET /metrics.

    python -m spillgate.fakes.vllm --port 8091 --served-name llama [--max-concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

JSON = dict[str, Any]
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
REPLY_TOKENS = 16  # a natural reply length; max_tokens below it ends with finish_reason=length
CREATED = 1_700_000_000


@dataclass
class Load:
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    ttft_s: float | None = None
    latency_s: float | None = None


class EngineMetrics:
    """vLLM's metric families on a private registry (one fake per process, but tests import)."""

    def __init__(self, served_name: str) -> None:
        self.registry = r = CollectorRegistry()
        names = ["model_name", "engine"]
        self.labels = (served_name, "0")
        self.running = Gauge("vllm:num_requests_running",
                             "Number of requests in model execution batches.", names, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting",
                             "Number of requests waiting to be processed.", names, registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc",
                        "KV-cache usage. 1 means 100 percent usage.", names, registry=r)
        self.prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
                              names, registry=r)
        self.generation = Counter("vllm:generation_tokens",
                                  "Number of generation tokens processed.", names, registry=r)
        self.success = Counter("vllm:request_success",
                               "Count of successfully processed requests.",
                               [*names, "finished_reason"], registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", names,
                              buckets=TTFT_BUCKETS, registry=r)
        self.queue = Histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", names,
                               buckets=REQUEST_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", names,
                             buckets=REQUEST_BUCKETS, registry=r)


@dataclass
class Job:
    """One request's life: arrival, admission, first token, finish (metrics recorded here)."""

    arrived: float
    prompt_tokens: int
    tokens: int
    finish_reason: str


class FakeVllm:
    def __init__(self, served_name: str, *, max_concurrency: int, prefill_s: float,
                 latency_s: float, max_model_len: int = 4096) -> None:
        self.served_name = served_name
        self.max_concurrency = max_concurrency
        self.prefill_s, self.latency_s = prefill_s, latency_s
        self.max_model_len = max_model_len
        self.metrics = EngineMetrics(served_name)
        self.load = Load()
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_concurrency)
        self._ids = itertools.count(1)

    # --- the scheduler ----------------------------------------------------------------------
    async def admit(self, job: Job) -> None:
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.metrics.queue.labels(*self.metrics.labels).observe(time.monotonic() - job.arrived)
        ttft = self.load.ttft_s if self.load.ttft_s is not None else self.prefill_s
        await asyncio.sleep(ttft)
        self.metrics.prompt.labels(*self.metrics.labels).inc(job.prompt_tokens)
        self.metrics.ttft.labels(*self.metrics.labels).observe(time.monotonic() - job.arrived)

    def token_gap_s(self, job: Job) -> float:
        latency = self.load.latency_s if self.load.latency_s is not None else self.latency_s
        return latency / max(1, job.tokens)

    def finish(self, job: Job, ok: bool) -> None:
        self.running -= 1
        self._slots.release()
        labels = self.metrics.labels
        if ok:
            self.metrics.generation.labels(*labels).inc(job.tokens)
            self.metrics.success.labels(*labels, job.finish_reason).inc()
            self.metrics.e2e.labels(*labels).observe(time.monotonic() - job.arrived)

    def exposition(self) -> bytes:
        m, labels, load = self.metrics, self.metrics.labels, self.load
        m.running.labels(*labels).set(self.running if load.running is None else load.running)
        m.waiting.labels(*labels).set(self.waiting if load.waiting is None else load.waiting)
        kv = self.running / self.max_concurrency  # each slot holds an equal share of the cache
        m.kv.labels(*labels).set(kv if load.kv_cache_usage is None else load.kv_cache_usage)
        return generate_latest(m.registry)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):08d}"


# --- the OpenAI wire format ------------------------------------------------------------------

def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(part.get("text", "")) for part in value if isinstance(part, dict))
    return 0


def _job(body: JSON, prompt_tokens: int) -> Job:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    tokens = min(int(limit), REPLY_TOKENS) if limit else REPLY_TOKENS
    reason = "length" if limit and int(limit) <= REPLY_TOKENS else "stop"
    return Job(time.monotonic(), max(1, prompt_tokens), max(1, tokens), reason)


def _usage(job: Job) -> JSON:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.tokens,
            "total_tokens": job.prompt_tokens + job.tokens}


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


def _sse(payload: JSON | str) -> bytes:
    data = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return f"data: {data}\n\n".encode()


async def _body(request: web.Request) -> JSON | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def build_app(engine: FakeVllm) -> web.Application:
    routes = web.RouteTableDef()

    def checked(body: JSON | None) -> web.Response | None:
        if body is None:
            return _error(400, "request body must be a JSON object", "BadRequestError")
        if body.get("model") != engine.served_name:
            return _error(404, f"The model `{body.get('model')}` does not exist.",
                          "NotFoundError")
        return None

    async def complete(request: web.Request, body: JSON, chat: bool) -> web.StreamResponse:
        prompt = (sum(_words(m.get("content")) for m in body.get("messages", []))
                  if chat else _words(body.get("prompt", "")))
        job = _job(body, prompt)
        kind = "chat.completion" if chat else "text_completion"
        ident = engine.new_id("chatcmpl" if chat else "cmpl")
        if body.get("stream"):
            return await _stream(request, engine, body, job, kind, ident)
        await engine.admit(job)
        ok = False
        try:
            await asyncio.sleep(engine.token_gap_s(job) * job.tokens)
            ok = True
        finally:
            engine.finish(job, ok)
        text = " ".join(["fake"] * job.tokens)
        choice: JSON = ({"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": job.finish_reason} if chat else
                        {"index": 0, "text": text, "logprobs": None,
                         "finish_reason": job.finish_reason})
        return web.json_response(
            {"id": ident, "object": kind, "created": CREATED, "model": engine.served_name,
             "choices": [choice], "usage": _usage(job)},
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    @routes.post("/v1/chat/completions")
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        problem = checked(body)
        return problem or await complete(request, body or {}, chat=True)

    @routes.post("/v1/completions")
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        problem = checked(body)
        return problem or await complete(request, body or {}, chat=False)

    @routes.get("/v1/models")
    async def models(request: web.Request) -> web.Response:
        card = {"id": engine.served_name, "object": "model", "created": CREATED,
                "owned_by": "vllm", "root": engine.served_name, "parent": None,
                "max_model_len": engine.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=engine.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    @routes.get("/_fake/load")
    async def get_load(request: web.Request) -> web.Response:
        return web.json_response(asdict(engine.load))

    @routes.post("/_fake/load")
    async def set_load(request: web.Request) -> web.Response:
        body = await _body(request)
        known = {f.name for f in fields(Load)}
        if body is None or not set(body) <= known:
            return _error(400, f"load takes a JSON object with keys {sorted(known)}",
                          "BadRequestError")
        try:
            for key, value in body.items():
                setattr(engine.load, key, None if value is None else float(value))
        except (TypeError, ValueError):
            return _error(400, "load values must be numbers or null", "BadRequestError")
        return web.json_response(asdict(engine.load))

    @routes.delete("/_fake/load")
    async def clear_load(request: web.Request) -> web.Response:
        engine.load = Load()
        return web.json_response(asdict(engine.load))

    app = web.Application()
    app.add_routes(routes)
    return app


async def _stream(request: web.Request, engine: FakeVllm, body: JSON, job: Job, kind: str,
                  ident: str) -> web.StreamResponse:
    chat = kind == "chat.completion"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece: str | None, finish: str | None, first: bool = False) -> JSON:
        if chat:
            delta: JSON = {"role": "assistant", "content": ""} if first else {}
            if piece is not None:
                delta["content"] = piece
            choice: JSON = {"index": 0, "delta": delta, "logprobs": None,
                            "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        return {"id": ident, "object": chunk_kind, "created": CREATED,
                "model": engine.served_name, "choices": [choice]}

    await engine.admit(job)
    ok = False
    try:
        if chat:
            await response.write(_sse(chunk(None, None, first=True)))
        for i in range(job.tokens):
            if i:
                await asyncio.sleep(engine.token_gap_s(job))
            await response.write(_sse(chunk("fake" if i == 0 else " fake", None)))
        await response.write(_sse(chunk("" if not chat else None, job.finish_reason)))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(_sse({"id": ident, "object": chunk_kind, "created": CREATED,
                                       "model": engine.served_name, "choices": [],
                                       "usage": _usage(job)}))
        await response.write(_sse("[DONE]"))
        ok = True
    finally:
        engine.finish(job, ok)
    await response.write_eof()
    return response


def main(argv: list[str] | None = None, run: Callable[..., None] = web.run_app) -> None:
    p = argparse.ArgumentParser(prog="python -m spillgate.fakes.vllm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-name", default="fake-vllm")
    p.add_argument("--max-concurrency", type=int, default=4, help="requests decoded at once")
    p.add_argument("--prefill-ms", type=float, default=20.0, help="time to the first token")
    p.add_argument("--latency-ms", type=float, default=100.0, help="decode time per request")
    p.add_argument("--max-model-len", type=int, default=4096)
    args = p.parse_args(argv)
    engine = FakeVllm(args.served_name, max_concurrency=args.max_concurrency,
                      prefill_s=args.prefill_ms / 1000, latency_s=args.latency_ms / 1000,
                      max_model_len=args.max_model_len)
    run(build_app(engine), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
