"""The spend guard and budget alerts through the whole gateway in process (tests/harness.py's
parts: fake backends, a real SQLite ledger, the real router, accountant and metrics), with
the alert webhook posting to a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.harness import LOCAL, PAID, harness

ADMIN = "admin-key-for-guard-tests-0123456789"
pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def guarded_node(tmp: Path, guard: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    alerts = {"budget_thresholds": [0.8, 1.0], "webhook_url_env": "SG_TEST_ALERT_URL"}
    async with harness(tmp, {"spend_guard": guard, "alerts": alerts}) as h:
        yield h.client


def _chat(model: str, key: str, **headers: str) -> dict[str, Any]:
    return {"url": "/v1/chat/completions", "headers": {"authorization": f"Bearer {key}",
                                                       **headers},
            "json": {"model": model, "max_tokens": 1000,
                     "messages": [{"role": "user", "content": "hi"}]}}


def _gauge(page: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in page.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return None


async def test_spend_over_the_limit_opens_the_guard(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with receiver() as (url, received):
        monkeypatch.setenv("SPILLGATE_ADMIN_KEY", ADMIN)
        monkeypatch.setenv("SG_TEST_ALERT_URL", url)
        guard = {"window_s": 60, "cooldown_s": 300, "node": {"limit_usd": "0.0000001"}}
        async with guarded_node(tmp_path, guard) as client:
            made = await client.post("/admin/keys", headers=admin, json={
                "name": "team", "daily_budget_usd": "0.0007"})
            key = made.json()["secret"]
            before = (await client.get("/metrics")).text
            assert _gauge(before, "spillgate_spend_guard_open", scope="node") == 0

            first = await client.post(**_chat("paid", key))  # worst case $0.0006+: > 80%
            assert first.status_code == 200, first.text
            assert float(first.headers["x-spillgate-cost-usd"]) > 0.0000001

            refused = await client.post(**_chat("paid", key))
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "spend_guard_open"
            assert 1 <= int(refused.headers["retry-after"]) <= 300
            pinned = await client.post(**_chat("auto", key, **{"x-spillgate-tier": "api"}))
            assert pinned.json()["error"]["code"] == "spend_guard_open"
            local = await client.post(**_chat("auto", key))
            assert local.status_code == 200
            assert local.headers["x-spillgate-backend"] == LOCAL

            page = (await client.get("/metrics")).text
            assert _gauge(page, "spillgate_spend_guard_open", scope="node") == 1
            assert _gauge(page, "spillgate_budget_alert_keys", period="day",
                          threshold="0.8") == 1
            live = (await client.get("/admin/live", headers=admin)).json()
            assert live["spend_guard"]["node"]["open"] is True
            assert live["spend_guard"]["node"]["why"] == "limit"
            assert {"route": "auto", "backend": LOCAL, "tier": "local",
                    "reason": "spend_guard", "spilling": False} in live["routes"]
            for _ in range(100):  # the webhook is off the request path: wait for it
                if len(received) >= 2:
                    break
                await asyncio.sleep(0.05)
    kinds = sorted(event["kind"] for event in received)
    assert kinds == ["budget_threshold", "spend_guard_opened"]
    alert = next(e for e in received if e["kind"] == "budget_threshold")
    assert alert["threshold"] == "0.8" and alert["period"] == "day"
    assert key not in str(received)  # key ids, never the secret


async def test_open_guard_with_fallback_local_serves_paid_only_routes_locally(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", ADMIN)
    monkeypatch.delenv("SG_TEST_ALERT_URL", raising=False)
    guard = {"window_s": 60, "fallback": "local", "per_key": {"limit_usd": "0.0000001"}}
    async with guarded_node(tmp_path, guard) as client:
        made = await client.post("/admin/keys", headers={"authorization": f"Bearer {ADMIN}"},
                                 json={"name": "team"})
        key = made.json()["secret"]
        assert (await client.post(**_chat("auto", key, **{"x-spillgate-tier": "api"})
                                  )).headers["x-spillgate-backend"] == PAID
        kept = await client.post(**_chat("auto", key, **{"x-spillgate-tier": "api"}))
        assert kept.status_code == 200
        assert kept.headers["x-spillgate-backend"] == LOCAL
        assert kept.headers["x-spillgate-route"] == "auto;reason=spend_guard"
