"""The cascade on the running node in front of the real llama.cpp engine (logprobs from the
bundled SmolLM2) and the recording fake provider: a kept draft never reaches the paid API, an
escalated one does once, and its ledger row carries both costs (issue 15)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import node_config, run_node
from tests.support import Proc, wait_http

pytestmark = pytest.mark.integration
MONEY_UNIT = Decimal("1e-10")  # SQLite money columns hold integer units of 1e-10 USD


@pytest.fixture(scope="module")
def cascade_node(engine: Proc, paid_fake: Proc, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[Proc, Path]]:
    tmp = Path(tmp_path_factory.mktemp("cascade"))
    config = node_config(engine.base_url, paid_fake.base_url, tmp)
    routes: list[dict[str, Any]] = config["routes"]  # type: ignore[assignment]
    base = {"policy": "cascade", "local": "smollm2", "paid": "openai/gpt-4o-mini"}
    # A log-probability is <= 0, so threshold 0 escalates every real draft and -1000 keeps it.
    routes += [{"name": "always-keep", **base, "cascade": {"threshold": -1000.0}},
               {"name": "always-escalate", **base, "cascade": {"threshold": 0.0}}]
    with run_node(config, tmp) as proc:
        wait_http(proc.base_url.removesuffix("/v1") + "/readyz")
        yield proc, tmp / "ledger.db"


def row(db: Path, request_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM requests WHERE request_id = ?",
                             (request_id,)).fetchone()
    return None if found is None else dict(found)


def ask(node: Proc, model: str) -> httpx.Response:
    reply = httpx.post(node.base_url + "/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    assert reply.status_code == 200, reply.text
    return reply


def paid_calls(paid: Proc) -> list[dict[str, Any]]:
    return [r for r in httpx.get(paid.base_url + "/_fake/requests").json()
            if r["path"] == "/v1/chat/completions"]


def settled(db: Path, request_id: str) -> dict[str, Any]:
    """The row once the batcher has written its final state (within ~50 ms)."""
    for _ in range(200):
        found = row(db, request_id)
        if found is not None and found["state"] == "settled":
            return found
        time.sleep(0.05)
    raise AssertionError(f"row {request_id} never settled")


def test_a_kept_draft_never_reaches_the_paid_api(
        cascade_node: tuple[Proc, Path], fakes: tuple[Proc, Proc]) -> None:
    node, db = cascade_node
    reply = ask(node, "always-keep")
    assert reply.headers["x-spillgate-route"] == "always-keep;reason=cascade_kept"
    assert reply.json()["choices"][0]["logprobs"] is None  # asked for, not handed over
    assert paid_calls(fakes[1]) == []
    found = settled(db, reply.headers["x-request-id"])
    assert found["tier"] == "local" and found["confidence"] < 0  # real logprobs


def test_an_escalated_draft_is_answered_by_the_paid_api_with_both_costs(
        cascade_node: tuple[Proc, Path], fakes: tuple[Proc, Proc]) -> None:
    node, db = cascade_node
    reply = ask(node, "always-escalate")
    assert reply.headers["x-spillgate-route"] == "always-escalate;reason=cascade_escalated"
    assert reply.headers["x-spillgate-backend"] == "openai"
    calls = paid_calls(fakes[1])
    assert len(calls) == 1 and "logprobs" not in calls[0]["body"]
    found = settled(db, reply.headers["x-request-id"])
    assert found["tier"] == "api" and found["cost_kind"] == "api"
    cost = Decimal(found["cost_usd"]) * MONEY_UNIT
    assert cost > 0
    assert cost.quantize(Decimal("1e-8")) == Decimal(reply.headers["x-spillgate-cost-usd"])
    assert found["draft_usd"] > 0  # the real draft took engine time: its share is on the row
