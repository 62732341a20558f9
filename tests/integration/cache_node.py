"""A node with cached routes in process, its paid API and local engine both the fake provider
on loopback (real HTTP, real wire format, every request it received recorded), a real
SQLite ledger file. Driven through httpx.ASGITransport, or through the official openai SDK
over the same transport."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from fastapi import FastAPI
from sqlalchemy import select

from spillgate.accountant import Accountant
from spillgate.app import create_app
from spillgate.cache.step import CacheStep
from spillgate.fakes.provider import FakeProvider, running_fake_provider
from spillgate.ledger.schema import requests
from spillgate.ledger.store import Ledger
from spillgate.settings import Settings

PAID = "openai/gpt-4o-mini"


def cache_settings(tmp: Path, fake: FakeProvider, **cache: Any) -> Settings:
    def route(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "policy": "api", "paid": PAID, **extra}

    return Settings.model_validate({
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [fake.base_url]}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": fake.base_url,
                       "api_key_env": None, "models": ["gpt-4o-mini"], "max_attempts": 1}],
        "routes": [
            route("exact", cache="exact"),
            route("semantic", cache="semantic"),
            route("sampled", cache="exact", cache_temperature=True),
            route("tools", cache="exact", cache_tool_calls=True),
            route("uncached"),
            {"name": "mixed", "policy": "auto", "local": "smollm2", "paid": PAID,
             "cache": "exact"},
        ],
        "cache": cache,
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
        "telemetry": {"nvml": False},
    })


@dataclass
class CacheNode:
    app: FastAPI
    client: httpx.AsyncClient
    fake: FakeProvider

    @property
    def step(self) -> CacheStep:
        step = self.app.state.node.cache
        if not isinstance(step, CacheStep):
            raise AssertionError("the node has no cache")
        return step

    @property
    def ledger(self) -> Ledger:
        accountant: Accountant = self.app.state.accountant
        return accountant.ledger

    def sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key or "unused-by-an-open-node", base_url=str(
            self.client.base_url) + "/v1", http_client=self.client, max_retries=0)

    async def ask(self, text: str, model: str = "exact", *, key: str | None = None,
                  headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}],
                "temperature": 0, **extra}
        auth = {"authorization": f"Bearer {key}"} if key else {}
        return await self.client.post("/v1/chat/completions", json=body,
                                      headers={**auth, **(headers or {})})

    def upstream_calls(self) -> int:
        return sum(1 for r in self.fake.requests if r.get("path") == "/v1/chat/completions")

    async def rows(self) -> list[dict[str, Any]]:
        await self.ledger.flush()
        async with self.ledger.reading() as conn:
            result = await conn.execute(select(requests).order_by(requests.c.started_at))
            return [dict(r._mapping) for r in result]


@contextlib.asynccontextmanager
async def cache_node(tmp: Path, **cache: Any) -> AsyncIterator[CacheNode]:
    async with running_fake_provider() as fake:
        app = create_app(cache_settings(tmp, fake, **cache))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://gateway") as client:
                yield CacheNode(app, client, fake)
