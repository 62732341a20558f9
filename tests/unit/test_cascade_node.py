"""The cascade through the node (issue 15): in-process gateway, real routing, accounting and
SQLite ledger; the local model and the paid API are FakeBackends that record every call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import yaml
from sqlalchemy import select

from spillgate.backends.base import UpstreamFailure
from spillgate.fakes.backend import Script
from spillgate.ledger.schema import budget_counters
from tests.harness import LOCAL, PAID, Harness, harness, row_of

CASCADE = {"name": "cascade", "policy": "cascade", "local": "smollm2",
           "paid": "openai/gpt-4o-mini", "cascade": {"signal": "mean_logprob",
                                                      "threshold": -1.0}}
BUFFERED = {**CASCADE, "name": "cascade-buffered",
            "cascade": {"threshold": -1.0, "stream": "buffer"}}
CONFIDENT = Script(logprobs=(-0.1, -0.3))  # mean -0.2 >= -1.0: kept
UNSURE = Script(logprobs=(-2.0, -0.5, -3.5))  # mean -2.0 < -1.0: escalated


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path, extra_routes=[CASCADE, BUFFERED],
                       allow_anonymous_loopback=True) as built:
        yield built


def paid_price(prompt: int, completion: int) -> Decimal:
    """USD of a gpt-4o-mini call, read from pricing.yaml by hand (the newest entry)."""
    book = yaml.safe_load(Path("models/pricing.yaml").read_text())
    entry = max(book["models"]["openai/gpt-4o-mini"], key=lambda e: str(e["effective_from"]))
    return (Decimal(str(entry["input"])) * prompt
            + Decimal(str(entry["output"])) * completion) / Decimal(10**6)


async def test_a_confident_draft_is_kept_and_the_paid_api_is_never_called(h: Harness) -> None:
    h.local.then(CONFIDENT)
    reply = await h.chat("cascade")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_kept"
    assert reply.headers["x-spillgate-backend"] == LOCAL
    assert h.paid.calls == [] and h.fallback.calls == []
    assert h.local.calls[0]["logprobs"] is True  # asked for, though the client did not
    assert reply.json()["choices"][0]["logprobs"] is None  # and not handed to the client
    row = await row_of(h, reply.headers["x-request-id"])
    assert (row["reason"], row["tier"], row["state"]) == ("cascade_kept", "local", "settled")
    assert row["confidence"] == pytest.approx((-0.1 - 0.3) / 2)
    assert row["draft_usd"] == 0  # the draft IS the answer: its cost is cost_usd


async def test_a_client_that_asked_for_logprobs_gets_them(h: Harness) -> None:
    h.local.then(CONFIDENT)
    reply = await h.chat("cascade", logprobs=True, top_logprobs=2)
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_kept"
    tokens = reply.json()["choices"][0]["logprobs"]["content"]
    assert [t["logprob"] for t in tokens] == [-0.1, -0.3]
    assert h.local.calls[0]["top_logprobs"] == 2


async def test_an_unsure_draft_is_escalated_and_the_row_carries_both_costs(
        h: Harness) -> None:
    h.local.then(UNSURE)
    reply = await h.chat("cascade")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_escalated"
    assert reply.headers["x-spillgate-backend"] == PAID
    assert len(h.local.calls) == 1 and len(h.paid.calls) == 1
    sent = h.paid.calls[0]
    assert "logprobs" not in sent and sent["stream"] is False  # the client's own request
    row = await row_of(h, reply.headers["x-request-id"])
    assert (row["reason"], row["tier"], row["backend"]) == ("cascade_escalated", "api", PAID)
    assert row["cost_usd"] == paid_price(5, 3)  # the paid call, priced as any paid call
    assert row["draft_usd"] > 0  # and the local draft's hardware share beside it
    assert row["confidence"] == pytest.approx(-2.0)
    assert h.inflight() == 0


async def test_sensitive_requests_never_escalate(h: Harness) -> None:
    h.local.then(UNSURE)
    body = {"model": "cascade", "messages": [
        {"role": "user", "content": "mail jane.doe@example.com about 4111 1111 1111 1111"}]}
    reply = await h.post(body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-backend"] == LOCAL
    assert reply.headers["x-spillgate-route"] == "cascade;reason=sensitive_local"
    assert h.paid.calls == [] and h.fallback.calls == []


async def test_escalation_reserves_and_settles_the_key_budget(h: Harness) -> None:
    key = await h.budget_key("10")
    h.local.then(UNSURE)
    reply = await h.chat("cascade", key=key)
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_escalated"
    assert await h.open_reservations() == 0 and await h.reserved_usd() == 0
    async with h.ledger.reading() as conn:
        spent = await conn.scalar(select(budget_counters.c.spent_usd).where(
            budget_counters.c.period.like("day:%")))
    assert spent == paid_price(5, 3)


async def test_an_empty_budget_serves_the_draft_instead(h: Harness) -> None:
    key = await h.budget_key("0")
    h.local.then(UNSURE)
    reply = await h.chat("cascade", key=key)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-backend"] == LOCAL
    assert h.paid.calls == []
    assert await h.open_reservations() == 0


async def test_a_stream_goes_local_unless_the_route_buffers(h: Harness) -> None:
    h.local.then(UNSURE)
    reply = await h.chat("cascade", stream=True)
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_stream_local"
    assert h.paid.calls == [] and "logprobs" not in h.local.calls[0]

    h.local.then(UNSURE)
    reply = await h.chat("cascade-buffered", stream=True,
                         stream_options={"include_usage": True})
    assert reply.status_code == 200
    assert reply.headers["x-spillgate-route"] == "cascade-buffered;reason=cascade_escalated"
    events = [orjson.loads(line[6:]) for line in reply.text.splitlines()
              if line.startswith("data: {")]
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"]["content"] == "ok"
    assert events[-1]["usage"]["completion_tokens"] == 3
    assert reply.text.rstrip().endswith("data: [DONE]")
    assert len(h.paid.calls) == 1 and h.paid.calls[0]["stream"] is False


async def test_the_metrics_count_kept_and_escalated(h: Harness) -> None:
    h.local.then(CONFIDENT, UNSURE, UNSURE)
    for _ in range(3):
        await h.chat("cascade")
    samples = {(s.labels["outcome"]): s.value
               for m in h.node.metrics.registry.collect() for s in m.samples
               if s.name == "spillgate_cascade_decisions_total"}
    assert samples == {"cascade_kept": 1, "cascade_escalated": 2}


async def test_a_failed_draft_is_answered_by_the_paid_model(h: Harness) -> None:
    h.local.then(Script(error=UpstreamFailure("engine crashed", upstream_status=500)))
    reply = await h.chat("cascade")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_draft_failed"
    assert reply.headers["x-spillgate-backend"] == PAID and len(h.paid.calls) == 1
    assert h.inflight() == 0


async def test_a_failed_escalation_serves_the_draft(h: Harness) -> None:
    h.local.then(UNSURE)
    h.paid.then(Script(error=UpstreamFailure("provider down", upstream_status=500)))
    reply = await h.chat("cascade")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-route"] == "cascade;reason=cascade_escalation_failed"
    assert reply.headers["x-spillgate-backend"] == LOCAL
    row = await row_of(h, reply.headers["x-request-id"])
    # the draft's engine time was booked when it left for the paid API
    assert row["tier"] == "local" and row["draft_usd"] > 0
    assert h.inflight() == 0 and await h.open_reservations() == 0


async def test_a_buffered_stream_carries_its_cost_and_the_openai_sdk_reads_it(
        h: Harness) -> None:
    """The in-stream cost frame every stream carries (stream_cost): on the usage chunk as
    `spillgate.cost_usd`, read through the official SDK, equal to the row and to the list
    price of the escalation."""
    h.local.then(UNSURE)
    sdk = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", max_retries=0,
                             http_client=httpx.AsyncClient(transport=h.client._transport))
    raw = await sdk.chat.completions.with_raw_response.create(
        model="cascade-buffered", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in raw.parse()]
    await sdk.close()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok"
    last = chunks[-1]
    assert last.usage is not None and last.choices == []
    extra = (last.model_extra or {})["spillgate"]
    row = await row_of(h, raw.headers["x-request-id"])
    assert row["reason"] == "cascade_escalated" and extra["backend"] == PAID
    assert Decimal(extra["cost_usd"]) == row["cost_usd"] == paid_price(
        row["prompt_tokens"], row["completion_tokens"]) > 0


@pytest.mark.parametrize(("script", "backend"), [(CONFIDENT, LOCAL), (UNSURE, PAID)])
async def test_a_buffered_stream_tells_its_cost_in_a_comment_before_done(
        h: Harness, script: Script, backend: str) -> None:
    h.local.then(script)
    reply = await h.chat("cascade-buffered", stream=True)
    lines = [line for line in reply.text.splitlines() if line]
    assert not any('"usage"' in line for line in lines)  # not asked for
    row = await row_of(h, reply.headers["x-request-id"])
    assert row["backend"] == backend
    assert lines[-2:] == [f": x-spillgate-cost-usd={row['cost_usd']:.8f}", "data: [DONE]"]
