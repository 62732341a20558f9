"""A streamed answer tells its cost in the stream (in-process harness, real ledger file).

Headers leave before the cost exists, so the stream settles before its last frames: the
usage chunk (when asked for) carries `spillgate.cost_usd`, and an SSE comment line
`: x-spillgate-cost-usd=` always precedes `data: [DONE]` (or the error event). Each figure
must be the one written to the request's ledger row, and the official OpenAI SDK must still
parse the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from spillgate.backends.base import UpstreamFailure
from spillgate.fakes.backend import Script
from tests.harness import LOCAL, PAID, Harness, harness, leave_early, row_of

COMMENT = ": x-spillgate-cost-usd="
BODY = {"messages": [{"role": "user", "content": "a lighthouse keeper and a storm"}],
        "stream": True, "max_tokens": 8}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path, allow_anonymous_loopback=True) as built:
        yield built


def frames(reply: httpx.Response) -> list[str]:
    """Every non-empty SSE line, in order (comments included)."""
    return [line for line in reply.text.splitlines() if line]


def money(row: dict[str, Any]) -> str:
    return f"{row['cost_usd']:.8f}"


@pytest.mark.parametrize(("model", "backend"), [("local", LOCAL), ("paid", PAID)])
async def test_usage_chunk_and_comment_carry_the_cost_written_to_the_row(
        h: Harness, model: str, backend: str) -> None:
    reply = await h.post({**BODY, "model": model, "stream_options": {"include_usage": True}})
    assert reply.status_code == 200
    assert "x-spillgate-cost-usd" not in reply.headers  # not known when headers leave
    lines = frames(reply)
    assert lines[-1] == "data: [DONE]"
    assert lines[-2].startswith(COMMENT)
    usage_chunk = orjson.loads(lines[-3].removeprefix("data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3
    row = await row_of(h, reply.headers["x-request-id"])
    assert row["state"] == "settled" and row["backend"] == backend
    assert usage_chunk["spillgate"] == {"cost_usd": money(row), "backend": backend}
    assert lines[-2] == COMMENT + money(row)
    if model == "paid":  # the list price of 5 prompt + 3 completion tokens of gpt-4o-mini
        assert row["cost_usd"] == Decimal(5 * 15 + 3 * 60) / Decimal(10**8)


async def test_without_include_usage_only_the_comment_tells_the_cost(h: Harness) -> None:
    reply = await h.post({**BODY, "model": "local"})
    lines = frames(reply)
    assert not any('"usage"' in line for line in lines)
    row = await row_of(h, reply.headers["x-request-id"])
    assert lines[-2:] == [COMMENT + money(row), "data: [DONE]"]


async def test_a_stream_cut_short_tells_its_cost_before_the_error_event(h: Harness) -> None:
    h.local.then(Script(error_after_first=UpstreamFailure("reset")))
    reply = await h.post({**BODY, "model": "local"})
    lines = frames(reply)
    assert "error" in orjson.loads(lines[-1].removeprefix("data: "))
    row = await row_of(h, reply.headers["x-request-id"])
    assert row["status"] == 502
    assert lines[-2] == COMMENT + money(row)


async def test_the_openai_sdk_reads_the_stream_and_keeps_the_cost(h: Harness) -> None:
    sdk = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key="unused", max_retries=0,
                             http_client=httpx.AsyncClient(transport=h.client._transport))
    stream = await sdk.chat.completions.create(
        model="local", messages=BODY["messages"], stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ok"
    last = chunks[-1]
    assert last.usage is not None and last.usage.completion_tokens == 3
    extra = (last.model_extra or {})["spillgate"]
    assert extra["backend"] == LOCAL and Decimal(extra["cost_usd"]) >= 0
    await sdk.close()


async def test_a_client_gone_mid_stream_is_settled_exactly_once(h: Harness) -> None:
    h.local.then(Script(hang_after_first=True))
    leave = asyncio.Event()
    sent = await leave_early(h.app, {**BODY, "model": "local"}, leave, on_first_byte=True)
    assert sent[0]["status"] == 200
    rows = await h.rows()
    assert [r["status"] for r in rows] == [499]
    assert h.requests_total("499") == 1
    assert h.inflight() == 0 and h.local.active == 0
