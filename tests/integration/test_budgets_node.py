"""Virtual keys, paid budgets and rate limits through the running node (real sockets, real
SQLite ledger, the recording fake provider)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.conftest import node_config, run_node
from tests.support import Proc, wait_http

pytestmark = pytest.mark.integration
ADMIN = "admin-key-for-budget-tests-0123456789"
BUDGET = Decimal("0.05")


@pytest.fixture(scope="module")
def node(local_fake: Proc, paid_fake: Proc, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[Proc]:
    tmp = Path(tmp_path_factory.mktemp("budgets"))
    config = node_config(local_fake.base_url + "/v1", paid_fake.base_url, tmp)
    config["routes"].append(  # type: ignore[attr-defined]
        {"name": "paid", "policy": "api", "paid": "openai/gpt-4o-mini",
         "fallbacks": ["anthropic/claude-3-5-haiku-latest"]})
    with run_node(config, tmp, env={"SPILLGATE_ADMIN_KEY": ADMIN}) as proc:
        wait_http(proc.base_url.removesuffix("/v1") + "/readyz")
        yield proc


def _create_key(node: Proc, **limits: object) -> str:
    made = httpx.post(node.base_url.removesuffix("/v1") + "/admin/keys",
                      json={"name": "team", **limits},
                      headers={"authorization": f"Bearer {ADMIN}"})
    assert made.status_code == 201, made.text
    secret: str = made.json()["secret"]
    return secret


def test_concurrent_paid_requests_never_overrun_the_budget(
    node: Proc, fakes: tuple[Proc, Proc]
) -> None:
    _, paid = fakes
    httpx.post(paid.base_url + "/_fake/faults", json={"latency_ms": 300}).raise_for_status()
    key = _create_key(node, daily_budget_usd=str(BUDGET))
    body = {"model": "openai/gpt-4o-mini", "max_tokens": 4000,
            "messages": [{"role": "user", "content": "Name a colour."}]}

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return list(await asyncio.gather(*(
                client.post(node.base_url + "/chat/completions", json=body,
                            headers={"authorization": f"Bearer {key}"})
                for _ in range(200))))

    replies = asyncio.run(fire())
    served = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert served and refused and len(served) + len(refused) == 200
    assert {r.json()["error"]["code"] for r in refused} == {"budget_exhausted"}
    assert all("retry-after" in r.headers for r in refused)
    # Every call that reached the provider held a reservation first.
    calls = [r for r in httpx.get(paid.base_url + "/_fake/requests").json()
             if r["path"] == "/v1/chat/completions"]
    assert len(calls) == len(served)
    # Each reservation is the worst case (4000 output tokens at $0.60/1M ≈ $0.0024), so the
    # $0.05 budget holds about 20 calls at a time: far fewer than 200 were let through.
    assert len(served) < 100
    remaining = [Decimal(r.headers["x-spillgate-budget-remaining-day-usd"]) for r in served]
    assert all(Decimal(0) <= left <= BUDGET for left in remaining)
    spent = sum((Decimal(r.headers["x-spillgate-cost-usd"]) for r in served), Decimal(0))
    assert spent <= BUDGET


def test_requests_per_minute_limit_answers_429_with_retry_after(node: Proc) -> None:
    key = _create_key(node, rpm=3)
    body = {"model": "local", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for _ in range(4):
        r = httpx.post(node.base_url + "/chat/completions", json=body, timeout=30,
                       headers={"authorization": f"Bearer {key}"})
        statuses.append(r.status_code)
    assert statuses == [200, 200, 200, 429]
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < float(r.headers["retry-after"]) <= 60


# USD per 1M tokens (models/pricing.yaml), written out here for an independent recount.
MINI = (Decimal("0.15"), Decimal("0.60"))
HAIKU = (Decimal("0.80"), Decimal("4.00"))


def _fire(node: Proc, key: str, body: dict[str, object], n: int = 100) -> list[httpx.Response]:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120,
                                     limits=httpx.Limits(max_connections=n)) as client:
            return list(await asyncio.gather(*(
                client.post(node.base_url + "/chat/completions", json=body,
                            headers={"authorization": f"Bearer {key}"})
                for _ in range(n))))

    return asyncio.run(fire())


def _billed(replies: list[httpx.Response], price: tuple[Decimal, Decimal]) -> Decimal:
    """What the provider billed for the served calls, from the usage each answer reports."""
    total = Decimal(0)
    for reply in replies:
        usage = reply.json()["usage"]
        total += (usage["prompt_tokens"] * price[0] + usage["completion_tokens"] * price[1])
    return total / 1_000_000


def _word_dense(words: int) -> str:
    # 2 bytes per word: the provider's token count is half the byte count, twice what a
    # bytes/4 estimate assumes.
    return " ".join("a" for _ in range(words))


def test_word_dense_prompts_never_overspend(node: Proc, fakes: tuple[Proc, Proc]) -> None:
    _, paid = fakes
    httpx.post(paid.base_url + "/_fake/faults", json={"latency_ms": 200}).raise_for_status()
    key = _create_key(node, daily_budget_usd=str(BUDGET))
    body = {"model": "openai/gpt-4o-mini", "max_tokens": 64,
            "messages": [{"role": "user", "content": _word_dense(20_000)}]}
    replies = _fire(node, key, body)
    served = [r for r in replies if r.status_code == 200]
    assert served and len(served) < 100  # $0.003 a call: the budget holds about 16
    assert {r.status_code for r in replies} <= {200, 429}
    assert _billed(served, MINI) <= BUDGET
    assert served[0].json()["usage"]["prompt_tokens"] >= 20_000  # word-dense indeed
    calls = [r for r in httpx.get(paid.base_url + "/_fake/requests").json()
             if r["path"] == "/v1/chat/completions"]
    assert len(calls) == len(served)  # nothing reached the provider unreserved


def test_fallback_to_a_dearer_model_never_overspends(node: Proc,
                                                     fakes: tuple[Proc, Proc]) -> None:
    _, paid = fakes
    faults = [{"latency_ms": 200},
              {"path": "/v1/chat/completions", "status": 503, "retry_after_s": 0}]
    httpx.post(paid.base_url + "/_fake/faults", json=faults).raise_for_status()
    key = _create_key(node, daily_budget_usd=str(BUDGET))
    body = {"model": "paid", "max_tokens": 100,
            "messages": [{"role": "user", "content": _word_dense(5_000)}]}
    replies = _fire(node, key, body)
    served = [r for r in replies if r.status_code == 200]
    assert served and len(served) < 100
    assert {r.headers["x-spillgate-backend"] for r in served} == {"anthropic"}
    assert _billed(served, HAIKU) <= BUDGET  # priced as the dearer model it fell back to
    spent = sum((Decimal(r.headers["x-spillgate-cost-usd"]) for r in served), Decimal(0))
    assert spent <= BUDGET
    messages = [r for r in httpx.get(paid.base_url + "/_fake/requests").json()
                if r["path"] == "/v1/messages"]
    assert len(messages) == len(served)
