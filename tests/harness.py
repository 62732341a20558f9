"""The whole gateway in process: `create_app` with FakeBackends, driven through ASGITransport.

A real SQLite ledger file, the real routing, accounting and metrics; only the backends are
in-process fakes (`spillgate.fakes.backend`). Every request takes milliseconds, so a test can
walk through every exit of the request path and check what it left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import func, select

from spillgate.accountant import Accountant
from spillgate.app import create_app
from spillgate.backends.anthropic_translate import to_anthropic_request
from spillgate.backends.base import UpstreamCall
from spillgate.backends.registry import Backends
from spillgate.backends.reliability import CircuitBreaker
from spillgate.errors import InvalidRequest
from spillgate.fakes.backend import AlwaysReady, FakeBackend
from spillgate.ledger.schema import budget_counters, budget_reservations, requests
from spillgate.ledger.store import Ledger
from spillgate.service import Node
from spillgate.settings import Settings
from spillgate.tenancy.keys import create_key

LOCAL, PAID, FALLBACK = "local-cpu", "openai", "anthropic"


class ManualClock:
    """A monotonic clock a test moves by hand (breaker reset times)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def harness_settings(tmp: Path, extra: dict[str, Any] | None = None,
                     extra_routes: Sequence[dict[str, Any]] = (), **server: Any) -> Settings:
    """`extra`: top-level settings replacing the harness's own (e.g. `routes`, `rules`);
    `extra_routes`: routes added to the harness's own."""
    unused = "http://127.0.0.1:9"  # never dialled: the backends are in-process fakes
    return Settings.model_validate({
        "server": server,
        "local": [{"name": LOCAL, "model": "smollm2", "base_urls": [unused + "/v1"],
                   "max_batch": 1}],
        "providers": [
            {"name": PAID, "kind": "openai", "base_url": unused + "/v1", "api_key_env": None,
             "models": ["gpt-4o-mini"]},
            {"name": FALLBACK, "kind": "anthropic", "base_url": unused, "api_key_env": None,
             "models": ["claude-3-5-haiku-latest"]},
        ],
        "routes": [
            {"name": "auto", "policy": "auto", "local": "smollm2",
             "paid": "openai/gpt-4o-mini", "fallbacks": ["anthropic/claude-3-5-haiku-latest"],
             "local_deadline_ms": 50},
            {"name": "local", "policy": "local", "local": "smollm2"},
            {"name": "paid", "policy": "api", "paid": "openai/gpt-4o-mini"},
            *extra_routes,
        ],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
        "telemetry": {"nvml": False},
    } | (extra or {}))


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    local: FakeBackend
    paid: FakeBackend
    fallback: FakeBackend
    backends: Backends
    clock: ManualClock

    @property
    def node(self) -> Node:
        node: Node = self.app.state.node
        return node

    @property
    def ledger(self) -> Ledger:
        accountant: Accountant = self.app.state.accountant
        return accountant.ledger

    def breaker(self, name: str) -> CircuitBreaker:
        return self.backends.breakers[name]

    async def chat(self, model: str = "auto", *, key: str | None = None,
                   **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        return await self.post(body, key=key)

    async def post(self, body: Any, *, key: str | None = None,
                   path: str = "/v1/chat/completions") -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if isinstance(body, bytes):
            return await self.client.post(path, content=body, headers={
                **headers, "content-type": "application/json"})
        return await self.client.post(path, json=body, headers=headers)

    async def rows(self) -> list[dict[str, Any]]:
        await self.ledger.flush()
        async with self.ledger.reading() as conn:
            result = await conn.execute(select(requests.c.request_id, requests.c.state,
                                               requests.c.status, requests.c.backend))
            return [dict(r._mapping) for r in result]

    async def open_reservations(self) -> int:
        async with self.ledger.reading() as conn:
            count = await conn.scalar(select(func.count()).select_from(budget_reservations))
            return int(count or 0)

    async def reserved_usd(self) -> Decimal:
        async with self.ledger.reading() as conn:
            total = await conn.scalar(select(func.sum(budget_counters.c.reserved_usd)))
            return Decimal(total or 0)

    async def budget_key(self, usd: str = "10") -> str:
        _, secret = await create_key(self.ledger, "harness", daily_budget_usd=Decimal(usd))
        return secret

    def inflight(self) -> int:
        return self.node.inflight.count(LOCAL)

    def requests_total(self, status: str) -> float:
        total = 0.0
        for metric in self.node.metrics.registry.collect():
            for sample in metric.samples:
                if (sample.name == "spillgate_requests_total"
                        and sample.labels.get("status") == status):
                    total += sample.value
        return total


async def row_of(h: Harness, request_id: str) -> dict[str, Any]:
    """The whole ledger row of one request (after the writer has flushed)."""
    await h.ledger.flush()
    async with h.ledger.reading() as conn:
        result = await conn.execute(select(requests).where(requests.c.request_id == request_id))
        return dict(result.one()._mapping)


def chat_scope(raw: bytes) -> dict[str, Any]:
    """The ASGI scope of a POST /v1/chat/completions carrying `raw`, for driving the app
    by hand."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"gateway"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("gateway", 80),
    }


async def leave_early(app: FastAPI, body: dict[str, Any], leave: asyncio.Event,
                      *, on_first_byte: bool = False, cut_body: bool = False,
                      ) -> list[dict[str, Any]]:
    """Drive the ASGI app as a client that disconnects once `leave` is set (or once the first
    body byte arrives, or halfway through sending its body): httpx's ASGITransport cannot
    leave halfway. Returns what the app sent."""
    raw = orjson.dumps(body)
    scope = chat_scope(raw)
    pending = [{"type": "http.request", "body": raw, "more_body": False}]
    if cut_body:
        pending = [{"type": "http.request", "body": raw[: len(raw) // 2], "more_body": True}]
        leave.set()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if on_first_byte and message["type"] == "http.response.body" and message.get("body"):
            leave.set()

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


def openai_wire(call: UpstreamCall, body: dict[str, Any]) -> bytes:
    return orjson.dumps({**body, "model": call.upstream_model})  # OpenAICompatBackend's


def anthropic_wire(call: UpstreamCall, body: dict[str, Any]) -> bytes:
    """What AnthropicBackend sends (it serves chat/completions only)."""
    if call.endpoint != "chat/completions":
        raise InvalidRequest("Anthropic serves chat/completions only")
    return orjson.dumps(to_anthropic_request(body, call.upstream_model))


@contextlib.asynccontextmanager
async def harness(tmp: Path, extra: dict[str, Any] | None = None,
                  extra_routes: Sequence[dict[str, Any]] = (), *,
                  local_backend: FakeBackend | None = None, **server: Any
                  ) -> AsyncIterator[Harness]:
    """`local_backend`: a FakeBackend (or subclass) named LOCAL to use instead of the plain one."""
    clock = ManualClock()
    local, paid, fallback = (local_backend or FakeBackend(LOCAL, "local", wire=openai_wire),
                             FakeBackend(PAID, "api", wire=openai_wire),
                             FakeBackend(FALLBACK, "api", wire=anthropic_wire))
    backends = Backends(
        backends={b.name: b for b in (local, paid, fallback)},
        supervisors={LOCAL: AlwaysReady(LOCAL)},
        breakers={LOCAL: CircuitBreaker(10**9, 1, clock=clock),
                  PAID: CircuitBreaker(1, 30, clock=clock),
                  FALLBACK: CircuitBreaker(1, 30, clock=clock)},
        attempts={LOCAL: 1, PAID: 1, FALLBACK: 1},
    )
    app = create_app(harness_settings(tmp, extra, extra_routes, **server), backends=backends,
                     clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Harness(app, client, local, paid, fallback, backends, clock)
