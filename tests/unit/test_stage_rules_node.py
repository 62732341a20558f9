"""Stage rules and the learned dispatcher route real requests through the node (in-process
harness: the real app, routing and ledger; fake backends that record what they received)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spillgate.cli import main as cli_main
from spillgate.routing.stage_rules import build_rules
from spillgate.settings import RuleSettings
from spillgate.tenancy.keys import create_key
from tests.harness import LOCAL, PAID, Harness, harness

AUTO = {"name": "auto", "policy": "auto", "local": "smollm2", "paid": "openai/gpt-4o-mini"}
ROUTES = [AUTO, {"name": "local", "policy": "local", "local": "smollm2"},
          {"name": "paid", "policy": "api", "paid": "openai/gpt-4o-mini"}]
RULES = [
    {"name": "synthesis", "match": {"tags": {"stage": "synthesis"}}, "tier": "api"},
    {"name": "tools-local", "match": {"tools": True, "models": ["auto"]}, "tier": "local"},
    {"name": "big-prompts", "match": {"min_prompt_tokens": 2000}, "model": "paid"},
]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
HARD = "Compute 48213 * 9917 - 3311 / 7 + 2**19 = ? Then 882 * 17 = ?"
EASY = "Say hello to my friend Anna."
EMAIL = "Write to jane.doe@example.com: " + HARD


async def chat(h: Harness, content: str = "hi", *, tags: str = "", key: str | None = None,
               **extra: Any) -> httpx.Response:
    headers = {"x-spillgate-tags": tags} if tags else {}
    if key:
        headers["authorization"] = f"Bearer {key}"
    body = {"model": extra.pop("model", "auto"),
            "messages": [{"role": "user", "content": content}], **extra}
    return await h.client.post("/v1/chat/completions", json=body, headers=headers)


def route_of(reply: httpx.Response) -> tuple[str, str]:
    assert reply.status_code == 200, reply.text
    return reply.headers["x-spillgate-backend"], reply.headers["x-spillgate-route"]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path, {"routes": ROUTES, "rules": RULES},
                       allow_anonymous_loopback=True) as built:
        yield built


async def test_a_stage_tag_pins_the_paid_tier_and_names_the_rule(h: Harness) -> None:
    assert route_of(await chat(h, tags="stage=synthesis")) == (
        PAID, "auto;reason=rule:synthesis")
    assert route_of(await chat(h, tags="stage=extraction")) == (LOCAL, "auto;reason=local_ok")
    assert len(h.paid.calls) == 1


async def test_rules_match_in_order_on_tools_and_prompt_size(h: Harness) -> None:
    # Tools and a stage tag: the first listed rule (synthesis) wins over tools-local.
    assert route_of(await chat(h, tags="stage=synthesis", tools=[TOOL]))[1] == \
        "auto;reason=rule:synthesis"
    assert route_of(await chat(h, tools=[TOOL])) == (LOCAL, "auto;reason=rule:tools-local")
    # A large prompt is pinned to another model: the `paid` route serves it.
    assert route_of(await chat(h, "word " * 2000)) == (PAID, "paid;reason=rule:big-prompts")


async def test_a_sensitive_request_pinned_to_the_paid_tier_fails_closed(h: Harness) -> None:
    reply = await chat(h, EMAIL, tags="stage=synthesis")
    assert reply.status_code == 403, reply.text
    error = reply.json()["error"]
    assert error["code"] == "sensitive_data"
    assert "rule synthesis" in error["message"]
    assert "jane.doe" not in reply.text
    reply = await chat(h, EMAIL + " " + "word " * 2000)  # pinned to the paid model
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "sensitive_data"
    assert h.paid.calls == []


async def test_a_rule_can_match_a_key(h: Harness) -> None:
    info, secret = await create_key(h.ledger, "batch")
    rule = RuleSettings.model_validate(
        {"name": "batch-key", "match": {"key_ids": [info.key_id]}, "tier": "api"})
    h.node.rules = build_rules([rule], h.node.routes)  # the key id exists only now
    assert route_of(await chat(h, key=secret)) == (PAID, "auto;reason=rule:batch-key")
    assert route_of(await chat(h)) == (LOCAL, "auto;reason=local_ok")


# --- the learned dispatcher ----------------------------------------------------------------
def train_tiny_router(tmp: Path) -> Path:
    """Arithmetic prompts: the local model fails, the paid one succeeds; chit-chat: both do."""
    rows = [{"prompt": f"Compute {1000 + 37 * i} * {91 + i} - {i * 13} / 7 = ?",
             "weak_ok": False, "strong_ok": True} for i in range(30)]
    names = ["Anna", "Bob", "Carl", "Dora", "Emil", "Fay", "Gus", "Hal", "Ida", "Jo", "Kim",
             "Lea", "Max", "Ned", "Ola", "Pat", "Quin", "Rea", "Sam", "Tom"]
    rows += [{"prompt": f"Say hello to my friend {name}.", "weak_ok": True, "strong_ok": True}
             for name in names]
    data, router = tmp / "rows.jsonl", tmp / "router.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli_main(["router", "train", "--data", str(data), "--output", str(router),
                     "--l2", "1"]) == 0
    return router


async def test_the_learned_dispatcher_sends_hard_prompts_to_the_paid_model(
        tmp_path: Path) -> None:
    router = train_tiny_router(tmp_path)
    routes = [{**AUTO, "router": str(router), "threshold": 0.5}, *ROUTES[1:]]
    async with harness(tmp_path, {"routes": routes}, allow_anonymous_loopback=True) as h:
        assert route_of(await chat(h, HARD)) == (PAID, "auto;reason=router_paid")
        assert route_of(await chat(h, EASY)) == (LOCAL, "auto;reason=router_local")
        # Sensitivity wins over the router, and the header pin over both.
        assert route_of(await chat(h, EMAIL)) == (LOCAL, "auto;reason=sensitive_local")
        reply = await h.client.post("/v1/chat/completions", headers={
            "x-spillgate-tier": "local"}, json={"model": "auto", "messages": [
                {"role": "user", "content": HARD}]})
        assert route_of(reply)[0] == LOCAL
        assert [c["messages"][0]["content"] for c in h.paid.calls] == [HARD]
