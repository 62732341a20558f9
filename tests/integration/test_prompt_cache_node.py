"""Provider prompt caching through the running node: breakpoints reach Anthropic on the right
blocks, never an OpenAI-protocol upstream, and cache writes and reads are priced at their own
rates in the ledger (recomputed here by hand from pricing.yaml's figures)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NODE_ENV
from tests.support import Proc, free_port, spawn, write_config

SYSTEM = "You are the archivist of a very long shared handbook that every call repeats"
MARKED = [{"role": "system", "content": [
    {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]}]
HAIKU = {"input": Decimal("0.80"), "read": Decimal("0.08"), "write": Decimal("1.00"),
         "output": Decimal("4.00")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc, Path]]:
    tmp = Path(tmp_path_factory.mktemp("prompt-cache"))
    fake_port, node_port = free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    config = {
        "server": {"port": node_port},
        "local": [{"name": "local-embed", "model": "wordllama-l2-supercat-256",
                   "engine": "embeddings"}],
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": fake_url + "/v1",
             "api_key_env": "FAKE_OPENAI_KEY", "models": ["gpt-4o-mini"]},
            {"name": "anthropic", "kind": "anthropic", "base_url": fake_url,
             "api_key_env": "FAKE_ANTHROPIC_KEY", "models": ["claude-3-5-haiku-latest"]},
        ],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
        "telemetry": {"nvml": False},
    }
    path = write_config(tmp / "node.yaml", config)
    with spawn(["-m", "spillgate.fakes.provider", "--port", str(fake_port), "--prompt-cache"],
               tmp / "fake.log", fake_url, fake_url + "/health") as fake, \
         spawn(["-m", "spillgate", "serve", "--config", str(path)], tmp / "node.log",
               f"http://127.0.0.1:{node_port}/v1", f"http://127.0.0.1:{node_port}/healthz",
               env=NODE_ENV) as node:
        yield node, fake, tmp / "ledger.db"


def _chat(node: Proc, model: str, text: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 16,
            "messages": [*MARKED, {"role": "user", "content": text}]}
    return httpx.post(node.base_url + "/chat/completions", json=body, timeout=30)


def _recorded(fake: Proc) -> list[dict[str, Any]]:
    return list(httpx.get(fake.base_url + "/_fake/requests").json())


def _row(db: Path, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM requests WHERE request_id = ? AND state != "
                               "'open'", (request_id,)).fetchone()
        if row is not None or time.monotonic() > deadline:
            assert row is not None, "ledger row never settled"
            return dict(row)
        time.sleep(0.1)


def test_breakpoint_reaches_anthropic_and_writes_then_reads_are_priced(
        stack: tuple[Proc, Proc, Path]) -> None:
    node, fake, db = stack
    first = _chat(node, "anthropic/claude-3-5-haiku-latest", "first question")
    second = _chat(node, "anthropic/claude-3-5-haiku-latest", "second question")
    assert first.status_code == second.status_code == 200, first.text
    sent = [r["body"] for r in _recorded(fake) if r["path"] == "/v1/messages"][-1]
    assert sent["system"] == [{"type": "text", "text": SYSTEM,
                               "cache_control": {"type": "ephemeral"}}]
    system_tokens = len(SYSTEM.split())  # the fake counts whitespace words
    wrote = _row(db, first.headers["x-request-id"])
    read = _row(db, second.headers["x-request-id"])
    assert (wrote["cache_write_tokens"], wrote["cached_tokens"]) == (system_tokens, 0)
    assert (read["cache_write_tokens"], read["cached_tokens"]) == (0, system_tokens)
    for row in (wrote, read):
        fresh = row["prompt_tokens"] - row["cached_tokens"] - row["cache_write_tokens"]
        by_hand = (fresh * HAIKU["input"] + row["cached_tokens"] * HAIKU["read"]
                   + row["cache_write_tokens"] * HAIKU["write"]
                   + row["completion_tokens"] * HAIKU["output"]) / 1_000_000
        stored = Decimal(row["cost_usd"]).scaleb(-10)  # SQLite keeps integer 1e-10 USD
        assert abs(stored - by_hand) < Decimal("1e-9")
    assert Decimal(first.headers["x-spillgate-cost-usd"]) > Decimal(
        second.headers["x-spillgate-cost-usd"])


def test_openai_upstream_never_sees_a_breakpoint(stack: tuple[Proc, Proc, Path]) -> None:
    node, fake, _ = stack
    reply = _chat(node, "openai/gpt-4o-mini", "plain question")
    assert reply.status_code == 200, reply.text
    sent = [r["body"] for r in _recorded(fake) if r["path"] == "/v1/chat/completions"][-1]
    assert "cache_control" not in str(sent)
    assert sent["messages"][0]["content"][0]["text"] == SYSTEM


def test_a_fifth_breakpoint_is_a_400_and_nothing_is_sent(
        stack: tuple[Proc, Proc, Path]) -> None:
    node, fake, _ = stack
    before = len(_recorded(fake))
    parts = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
             for i in range(5)]
    reply = httpx.post(node.base_url + "/chat/completions", timeout=30, json={
        "model": "anthropic/claude-3-5-haiku-latest", "max_tokens": 8,
        "messages": [{"role": "user", "content": parts}]})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "cache_control"
    assert len(_recorded(fake)) == before
