"""The cost clock against a hand model, recomputed from the raw ledger rows alone.

A known workload — plain and streamed requests to the real llama.cpp engine, paid requests to
the fake provider, overlapping in time — goes through the real node. After the node has shut
down (its last hardware period written), the test reads the SQLite file directly and
recomputes, with its own arithmetic (not the code under test):
  - the hardware rate of the `cpu-node` profile from models/hardware.yaml, at nominal power;
  - each local request's share by an even split of every moment among the local requests in
    flight (row started_at .. finished_at);
  - the time any local request was in flight (the union of those intervals).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import node_config, run_node
from tests.support import REPO, Proc, wait_http

pytestmark = pytest.mark.integration
MONEY_UNIT = Decimal("1e-10")  # the ledger keeps money as integer 1e-10 USD on SQLite
# Each request asks its own question, from its first word on: the engine reuses a slot's
# cached prompt prefix, and a request that found most of its prompt cached would have little
# work of its own, which is not the workload this test is about (the second test's comment
# says how that failed there). Greedy decoding keeps every answer's length the same run after
# run (in 3 runs every local answer ran to its max_tokens; shares 0.81-1.60x the even split).
PROMPTS = {
    "plain-1": "Tell a short story about a lighthouse keeper and a storm.",
    "stream-1": "Write a short story about a fisherman and a whale.",
    "paid-1": "Summarize the plot of a heist film.",
    "plain-2": "Describe a winter morning in a small mountain village.",
    "stream-2": "Imagine a robot learning to paint, and tell its story.",
    "paid-2": "List three facts about octopuses.",
    "plain-3": "Narrate a day in the life of a city bus driver.",
    "stream-3": "Recount a long train journey across a desert, as a story.",
    "paid-3": "Explain what a lighthouse does.",
}


def hand_rate_usd_per_s() -> float:
    """cpu-node, 1 unit, nominal watts: amortization per average month plus energy."""
    p = yaml.safe_load((REPO / "models" / "hardware.yaml").read_text())["profiles"]["cpu-node"]
    month_s = 30.4375 * 86400
    fixed = ((p["capex_usd"] - p.get("residual_usd", 0)) / p["amortization_months"]
             + p.get("fixed_monthly_usd", 0)) / month_s
    watts = p["nominal_watts"] + p.get("host_watts", 0)
    return float(fixed + watts * p.get("pue", 1) * p["usd_per_kwh"] / 3_600_000)


@dataclass(frozen=True)
class Row:
    request_id: str
    tier: str
    stream: bool
    start: float
    end: float
    cost: float
    status: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_text: str  # the stored amount to 8 digits, from the exact value (a float may not tie)


def read_ledger(path: Path) -> tuple[list[Row], list[sqlite3.Row]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        rows = [Row(r["request_id"], r["tier"], bool(r["stream"]),
                    datetime.fromisoformat(r["started_at"]).timestamp(),
                    datetime.fromisoformat(r["finished_at"]).timestamp(),
                    float(r["cost_usd"] * MONEY_UNIT), r["status"], r["prompt_tokens"],
                    r["cached_tokens"], r["completion_tokens"],
                    f"{r['cost_usd'] * MONEY_UNIT:.8f}")
                for r in db.execute("SELECT * FROM requests WHERE state != 'open'")]
        periods = list(db.execute("SELECT * FROM hardware_periods"))
    finally:
        db.close()
    return rows, periods


def even_split(rows: list[Row], rate: float) -> tuple[dict[str, float], float]:
    """Each moment's cost split evenly among the local requests in flight; and the total time
    any was in flight."""
    edges = sorted({t for r in rows for t in (r.start, r.end)})
    share = {r.request_id: 0.0 for r in rows}
    in_flight_s = 0.0
    for a, b in itertools.pairwise(edges):
        live = [r for r in rows if r.start <= a and r.end >= b]
        if live:
            in_flight_s += b - a
            for r in live:
                share[r.request_id] += rate * (b - a) / len(live)
    return share, in_flight_s


async def workload(base: str) -> dict[str, httpx.Response]:
    """Two overlapping waves of local requests (never more than the engine's batch of 4),
    paid calls in between, an idle gap, then a lone plain and a lone stream that overlap."""
    replies: dict[str, httpx.Response] = {}

    async def call(client: httpx.AsyncClient, name: str, model: str, stream: bool,
                   max_tokens: int, delay: float) -> None:
        await asyncio.sleep(delay)
        body = {"model": model, "max_tokens": max_tokens, "stream": stream, "temperature": 0,
                "messages": [{"role": "user", "content": PROMPTS[name]}]}
        async with client.stream("POST", base + "/chat/completions", json=body) as reply:
            await reply.aread()
            replies[name] = reply

    async with httpx.AsyncClient(timeout=600) as client:  # a loaded machine is slow
        await asyncio.gather(
            call(client, "plain-1", "local", False, 40, 0.0),
            call(client, "stream-1", "local", True, 40, 0.0),
            call(client, "paid-1", "openai/gpt-4o-mini", False, 40, 0.2),
            call(client, "plain-2", "local", False, 24, 0.6),
            call(client, "stream-2", "local", True, 48, 0.8),
            call(client, "paid-2", "openai/gpt-4o-mini", True, 40, 1.0),
        )
        await asyncio.sleep(1.5)  # idle: nothing local in flight
        await asyncio.gather(
            call(client, "plain-3", "local", False, 32, 0.0),
            call(client, "stream-3", "local", True, 32, 0.7),
            call(client, "paid-3", "openai/gpt-4o-mini", False, 40, 0.3),
        )
    return replies


@pytest.mark.timeout(900)  # two phases on the real engine: minutes on a loaded machine
def test_cost_clock_matches_an_even_split_recomputed_from_raw_rows(
    engine: Proc, fakes: tuple[Proc, Proc], tmp_path: Path
) -> None:
    _, paid = fakes
    httpx.post(paid.base_url + "/_fake/faults", json={"latency_ms": 400}).raise_for_status()
    config = node_config(engine.base_url, paid.base_url, tmp_path)
    config["telemetry"] = {"nvml": False}  # nominal watts on any machine: the hand model's
    with run_node(config, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")
        replies = asyncio.run(workload(node.base_url))
    # The node has shut down: every row and the last hardware period are written.
    assert {r.status_code for r in replies.values()} == {200}
    rows, periods = read_ledger(tmp_path / "ledger.db")
    by_id = {r.request_id: r for r in rows}
    local = [r for r in rows if r.tier == "local"]
    assert len(local) == 6 and len(rows) == 9

    rate = hand_rate_usd_per_s()
    share, in_flight_s = even_split(local, rate)
    for row in local:
        assert row.prompt_tokens - row.cached_tokens > 5, row  # it computed its own question
        assert share[row.request_id] / 2 <= row.cost <= share[row.request_id] * 2, row

    busy_s = sum(p["busy_s"] for p in periods)
    assert abs(busy_s - in_flight_s) <= 0.05 * in_flight_s, (busy_s, in_flight_s)
    busy_usd = sum(float(p["busy_usd"] * MONEY_UNIT) for p in periods)
    assert busy_usd == pytest.approx(rate * busy_s, rel=1e-3)  # the profile's nominal rate
    assert all(p["measured_s"] == 0 for p in periods)  # no NVML here: the rows say nominal
    # Every busy micro-dollar is on a local row or kept unattributed (none here: no spill,
    # no other client).
    unattributed = sum(float(p["unattributed_usd"] * MONEY_UNIT) for p in periods)
    assert sum(r.cost for r in local) + unattributed == pytest.approx(busy_usd, abs=1e-9)

    for name, reply in replies.items():
        row = by_id[reply.headers["x-request-id"]]
        if name.startswith("plain"):  # a local answer carries its real share
            assert reply.headers["x-spillgate-cost-usd"] == row.cost_text
            assert row.cost > 0
        if row.stream:  # a stream tells it at its end, as the row has it
            assert reply.text.endswith(f": x-spillgate-cost-usd={row.cost_text}\n\n"
                                       "data: [DONE]\n\n")
            assert row.cost > 0
        if name.startswith("paid"):  # list price of what the provider reported
            fresh = row.prompt_tokens - row.cached_tokens
            hand = (fresh * 0.15 + row.cached_tokens * 0.075 + row.completion_tokens * 0.60) / 1e6
            assert row.tier == "api" and row.cost == pytest.approx(hand, rel=1e-9)


# --- corrections: a plain request's even share, a stream's bytes/4 prompt -------------------
# Word-dense prompts: single letters cost a token each for two bytes, so bytes/4 counts half
# of the engine's prompt tokens. The two dense prompts differ from their first letter: the
# engine reuses a slot's cached prefix, and a stream that found the plain request's 1,100
# tokens cached would have almost no prompt to prefill (CI once: 1,129 of 1,130 cached), which
# is not the workload this test is about. The two short questions differ from their first
# word for the same reason: a short plain request that found the short stream's whole prompt
# cached (a CI-like run: 32 of 33 tokens) and answered in 8 tokens had 9 tokens of work, and
# the share it keeps as the last to settle came out 2.04x its hand figure. Greedy decoding
# fixes the answers' lengths (sampled, the short plain answer ran 7 to 48 tokens, and its
# share 0.8x to 1.6x the hand figure in 8 runs; greedy: 18 tokens, 0.97x to 1.18x in 6).
def dense(first: int) -> str:
    return " ".join("abcdefghijklmnopqrstuvwxyz"[(first + i) % 26] for i in range(1100))


SHORT_STREAM = "Say hello."
SHORT_PLAIN = "Name a colour."


def token_split(rows: list[Row], rate: float) -> dict[str, float]:
    """Each moment's cost split among the local requests in flight by tokens: a request's
    work (prompt tokens not from the engine's cache + completion tokens, as the engine
    reported them) spread evenly over its time in flight."""
    speed = {r.request_id: (r.prompt_tokens - r.cached_tokens + r.completion_tokens)
             / (r.end - r.start) for r in rows}
    edges = sorted({t for r in rows for t in (r.start, r.end)})
    share = {r.request_id: 0.0 for r in rows}
    for a, b in itertools.pairwise(edges):
        live = [r for r in rows if r.start <= a and r.end >= b]
        total = sum(speed[r.request_id] for r in live)
        for r in live:
            part = speed[r.request_id] / total if total else 1 / len(live)
            share[r.request_id] += rate * (b - a) * part
    return share


async def dense_workload(base: str) -> dict[str, httpx.Response]:
    """A plain request with a long word-dense prompt next to a stream with a short one, then
    the other way round; each pair starts together."""
    replies: dict[str, httpx.Response] = {}

    async def call(client: httpx.AsyncClient, name: str, stream: bool, prompt: str,
                   max_tokens: int) -> None:
        body = {"model": "local", "max_tokens": max_tokens, "stream": stream,
                "temperature": 0,  # greedy: answers of one length every run
                "messages": [{"role": "user", "content": prompt}]}
        async with client.stream("POST", base + "/chat/completions", json=body) as reply:
            await reply.aread()
            replies[name] = reply

    async with httpx.AsyncClient(timeout=600) as client:  # a loaded CI machine is slow
        await asyncio.gather(call(client, "dense-plain", False, dense(0), 4),
                             call(client, "short-stream", True, SHORT_STREAM, 48))
        await asyncio.sleep(1.0)
        await asyncio.gather(call(client, "dense-stream", True, dense(13), 4),
                             call(client, "short-plain", False, SHORT_PLAIN, 48))
    return replies


@pytest.mark.timeout(900)
def test_shares_are_corrected_by_the_engines_token_counts(
    engine: Proc, fakes: tuple[Proc, Proc], tmp_path: Path
) -> None:
    _, paid = fakes
    config = node_config(engine.base_url, paid.base_url, tmp_path)
    config["telemetry"] = {"nvml": False}
    with run_node(config, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")
        replies = asyncio.run(dense_workload(node.base_url))
    assert {r.status_code for r in replies.values()} == {200}
    rows, periods = read_ledger(tmp_path / "ledger.db")
    by_name = {name: next(r for r in rows if r.request_id == reply.headers["x-request-id"])
               for name, reply in replies.items()}
    for name in ("dense-plain", "dense-stream"):  # each prefilled its own long prompt
        row = by_name[name]
        assert row.prompt_tokens > 1000 and row.cached_tokens < 100, (name, row)
    for name in ("short-stream", "short-plain"):  # at most the chat template's head cached
        row = by_name[name]
        assert row.prompt_tokens - row.cached_tokens > 5, (name, row)
    rate = hand_rate_usd_per_s()
    hand = token_split(rows, rate)
    even, _ = even_split(rows, rate)
    for name, row in by_name.items():
        assert hand[row.request_id] / 2 <= row.cost <= hand[row.request_id] * 2, (
            name, row.cost, hand[row.request_id])
    # The workload is one where tokens matter: an even split misses the hand model by more
    # than 2x for at least one request (one run: the short plain request 6x, the short
    # stream 2.5x), so the figures above could not come from one.
    assert any(not hand[r.request_id] / 2 <= even[r.request_id] <= hand[r.request_id] * 2
               for r in by_name.values())
    unattributed = sum(float(p["unattributed_usd"] * MONEY_UNIT) for p in periods)
    busy_usd = sum(float(p["busy_usd"] * MONEY_UNIT) for p in periods)
    assert sum(r.cost for r in rows) + unattributed == pytest.approx(busy_usd, abs=1e-9)
