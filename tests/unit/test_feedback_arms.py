"""POST /v1/feedback (a key rates only its own requests) and canary arms through the node,
down to the per-arm report (issue 15)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from spillgate.ledger.schema import requests
from spillgate.reports.arms import read_arms, render_arms
from spillgate.routing.arms import ARM_KEY_HEADER
from tests.harness import Harness, harness

SPLIT = {"name": "split", "policy": "local", "local": "smollm2",
         "arms": [{"name": "local-arm", "weight": 1},
                  {"name": "cascade-arm", "weight": 1, "policy": "cascade",
                   "paid": "openai/gpt-4o-mini", "cascade": {"threshold": -1.0}}]}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path, extra_routes=[SPLIT]) as built:
        yield built


async def feedback(h: Harness, key: str | None, body: Any) -> Any:
    return await h.post(body, key=key, path="/v1/feedback")


async def column(h: Harness, request_id: str, name: str) -> Any:
    await h.ledger.flush()
    async with h.ledger.reading() as conn:
        return await conn.scalar(select(requests.c[name]).where(
            requests.c.request_id == request_id))


async def test_a_key_rates_its_own_request(h: Harness) -> None:
    key = await h.budget_key()
    answer = await h.chat("local", key=key)
    rid = answer.headers["x-request-id"]
    rated = await feedback(h, key, {"request_id": rid, "score": 0.75})
    assert rated.status_code == 200, rated.text
    assert rated.json() == {"object": "feedback", "request_id": rid, "score": 0.75}
    assert await column(h, rid, "feedback") == 0.75
    assert await column(h, rid, "feedback_at") is not None
    again = await feedback(h, key, {"request_id": rid, "score": 0})  # replaces the first
    assert again.status_code == 200 and await column(h, rid, "feedback") == 0


async def test_another_keys_request_looks_like_no_request_at_all(h: Harness) -> None:
    owner, other = await h.budget_key(), await h.budget_key()
    rid = (await h.chat("local", key=owner)).headers["x-request-id"]
    theirs = await feedback(h, other, {"request_id": rid, "score": 1})
    nobody = await feedback(h, other, {"request_id": "0" * 32, "score": 1})
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json() == nobody.json()  # nothing tells the id exists
    assert theirs.json()["error"]["code"] == "request_not_found"
    assert await column(h, rid, "feedback") is None
    unauthenticated = await feedback(h, None, {"request_id": rid, "score": 1})
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("body, param", [
    ({"request_id": "x", "score": 1.5}, "score"),
    ({"request_id": "x", "score": -0.1}, "score"),
    ({"request_id": "x", "score": "good"}, "score"),
    ({"request_id": "x", "score": True}, "score"),
    ({"request_id": "x"}, "score"),
    ({"score": 1}, "request_id"),
    ({"request_id": "", "score": 1}, "request_id"),
    ({"request_id": "x", "score": 1, "extra": 1}, "extra"),
    (b"[1, 2]", None),
    (b"not json", None),
])
async def test_bad_feedback_is_a_400_in_the_openai_shape(h: Harness, body: Any,
                                                         param: str | None) -> None:
    key = await h.budget_key()
    reply = await feedback(h, key, body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


async def test_an_arm_key_keeps_its_arm_and_each_row_is_tagged(h: Harness) -> None:
    key = await h.budget_key()
    seen: dict[str, set[str]] = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        for _ in range(3):
            reply = await h.client.post("/v1/chat/completions", json={
                "model": "split", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}", ARM_KEY_HEADER: user})
            assert reply.status_code == 200, reply.text
            arm = await column(h, reply.headers["x-request-id"], "arm")
            seen.setdefault(user, set()).add(arm)
    assert all(len(arms) == 1 for arms in seen.values()), seen
    assert {arm for arms in seen.values() for arm in arms} <= {"local-arm", "cascade-arm"}


async def test_without_a_header_the_api_key_picks_the_arm(h: Harness) -> None:
    keys = [await h.budget_key() for _ in range(12)]
    arms: Counter[str] = Counter()
    for key in keys:
        first = await h.chat("split", key=key)
        second = await h.chat("split", key=key)
        a = await column(h, first.headers["x-request-id"], "arm")
        assert a == await column(h, second.headers["x-request-id"], "arm")
        arms[a] += 1
    assert set(arms) <= {"local-arm", "cascade-arm"}


async def test_the_arms_report_compares_cost_latency_and_feedback(h: Harness) -> None:
    key = await h.budget_key()
    scores = {"local-arm": [1.0, 0.0, 1.0], "cascade-arm": [0.5, 0.5]}
    users: dict[str, list[str]] = {"local-arm": [], "cascade-arm": []}
    for n in range(40):  # find users on each arm
        reply = await h.client.post("/v1/chat/completions", json={
            "model": "split", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}", ARM_KEY_HEADER: f"user-{n}"})
        arm = await column(h, reply.headers["x-request-id"], "arm")
        if len(users[arm]) < len(scores[arm]):
            users[arm].append(reply.headers["x-request-id"])
            await feedback(h, key, {"request_id": reply.headers["x-request-id"],
                                    "score": scores[arm][len(users[arm]) - 1]})
    assert all(len(users[a]) == len(scores[a]) for a in scores), users
    await h.ledger.flush()
    now = datetime.now(UTC)
    async with h.ledger.reading() as conn:
        figures = {f.arm: f for f in await read_arms(conn, now - timedelta(hours=1),
                                                     now + timedelta(minutes=1))}
        rows = [dict(r._mapping) for r in await conn.execute(select(requests))]
    for arm, expected in scores.items():
        mine = [r for r in rows if r["arm"] == arm]
        assert figures[arm].requests == len(mine)
        assert figures[arm].rated == len(expected)
        assert figures[arm].mean_feedback == pytest.approx(sum(expected) / len(expected))
        assert figures[arm].cost_usd == sum((r["cost_usd"] + r["draft_usd"] for r in mine),
                                            Decimal(0))
        latencies = [r["latency_ms"] for r in mine]
        assert figures[arm].mean_latency_ms == pytest.approx(sum(latencies) / len(latencies))
    assert figures["cascade-arm"].cascade == figures["cascade-arm"].requests
    text = render_arms(list(figures.values()), "md", now, now)
    assert "| split | cascade-arm |" in text and "| split | local-arm |" in text
    html = render_arms(list(figures.values()), "html", now, now)
    assert "<td>cascade-arm</td>" in html


async def test_escalated_rows_count_on_the_cascade_arm(h: Harness) -> None:
    key = await h.budget_key()
    h.local.logprobs = (-5.0,)  # every draft unsure
    for n in range(30):
        await h.client.post("/v1/chat/completions", json={
            "model": "split", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}", ARM_KEY_HEADER: f"u{n}"})
    await h.ledger.flush()
    now = datetime.now(UTC)
    async with h.ledger.reading() as conn:
        figures = {f.arm: f for f in await read_arms(conn, now - timedelta(hours=1),
                                                     now + timedelta(minutes=1))}
    cascade = figures["cascade-arm"]
    assert cascade.escalated == cascade.cascade == cascade.requests > 0
    assert {m.model for m in cascade.models} == {"api:gpt-4o-mini"}
    assert {m.model for m in figures["local-arm"].models} == {"local:smollm2"}
    assert figures["local-arm"].escalation_rate is None


async def test_the_admin_api_serves_the_arms_report(h: Harness,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    admin = "admin-key-for-the-arms-report-0123"
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", admin)
    key = await h.budget_key()
    for n in range(10):
        await h.client.post("/v1/chat/completions", json={
            "model": "split", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}", ARM_KEY_HEADER: f"u{n}"})
    await h.ledger.flush()
    reply = await h.client.get("/admin/report/arms?since=1h&format=json",
                               headers={"authorization": f"Bearer {admin}"})
    assert reply.status_code == 200, reply.text
    arms = {a["arm"]: a for a in reply.json()["arms"]}
    assert set(arms) == {"local-arm", "cascade-arm"}
    assert sum(a["requests"] for a in arms.values()) == 10
    refused = await h.client.get("/admin/report/arms", headers={"authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    bad = await h.client.get("/admin/report/arms?format=csv",
                             headers={"authorization": f"Bearer {admin}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "format"
