"""Every exit of the request path leaves nothing behind (issue 10, in-process harness).

For each exit the table asserts: the status the client got, the ledger row settled with that
status, the local in-flight count back to zero, no backend call still running, no budget
reservation outstanding, no breaker probe stuck, and the next `auto` request served locally
as if nothing had happened (the local engine takes one request at a time here, so a single
leaked slot would send it to the paid API).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from spillgate.backends.base import UpstreamFailure
from spillgate.errors import InvalidRequest
from spillgate.fakes.backend import Script
from tests.harness import FALLBACK, LOCAL, PAID, Harness, harness, leave_early


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    # These tests mix keyed (budget) and anonymous requests; anonymous loopback access stays
    # open once virtual keys exist only when set explicitly (access rules: test_access.py).
    async with harness(tmp_path, allow_anonymous_loopback=True) as built:
        yield built


async def assert_clean(h: Harness) -> None:
    """Nothing left behind, and an idle node still serves `auto` locally."""
    assert h.inflight() == 0
    assert all(not b.probing for b in h.backends.breakers.values())
    assert h.local.active == h.paid.active == h.fallback.active == 0
    assert await h.open_reservations() == 0
    assert await h.reserved_usd() == 0
    rows = await h.rows()
    assert all(r["state"] != "open" for r in rows), rows
    reply = await h.chat("auto")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-backend"] == LOCAL
    assert reply.headers["x-spillgate-route"] == "auto;reason=local_ok"
    assert h.inflight() == 0


def assert_openai_error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


def sse_events(reply: httpx.Response) -> list[Any]:
    return [orjson.loads(line[6:]) if line != "data: [DONE]" else "[DONE]"
            for line in reply.text.splitlines() if line.startswith("data: ")]


@dataclass(frozen=True)
class Exit:
    name: str
    model: str
    status: int  # what the client gets (streams: the HTTP status of the reply)
    row_status: int  # what the ledger row says
    local: tuple[Script, ...] = ()
    paid: tuple[Script, ...] = ()
    fallback: tuple[Script, ...] = ()
    stream: bool = False
    backend: str = ""  # the row's backend
    extra: dict[str, Any] = field(default_factory=dict)


EXITS = [
    Exit("local answer", "auto", 200, 200, backend=LOCAL),
    Exit("local ApiError", "auto", 400, 400, local=(Script(error=InvalidRequest("bad")),),
         backend=LOCAL),
    Exit("local unexpected exception", "auto", 500, 500,
         local=(Script(error=RuntimeError("boom")),), backend=LOCAL),
    Exit("local answer without usage", "auto", 502, 502, local=(Script(usage=False),),
         backend=LOCAL),
    Exit("local answer with garbled usage", "auto", 502, 502,
         local=(Script(garbled_usage=True),), backend=LOCAL),
    Exit("local failure falls back to paid", "auto", 200, 200,
         local=(Script(error=UpstreamFailure("down", upstream_status=503)),), backend=PAID),
    Exit("every target fails", "auto", 502, 502,
         local=(Script(error=UpstreamFailure("down")),),
         paid=(Script(error=UpstreamFailure("down")),),
         fallback=(Script(error=UpstreamFailure("down")),), backend=LOCAL),
    Exit("paid unexpected exception", "paid", 500, 500,
         paid=(Script(error=TypeError("translation bug")),), backend=PAID),
    Exit("paid answer without usage", "paid", 502, 502, paid=(Script(usage=False),),
         backend=PAID),
    Exit("stream answer", "auto", 200, 200, stream=True, backend=LOCAL),
    Exit("stream fails before first byte, falls back", "auto", 200, 200, stream=True,
         local=(Script(error=UpstreamFailure("down")),), backend=PAID),
    Exit("stream unexpected exception before first byte", "auto", 500, 500, stream=True,
         local=(Script(error=KeyError("x")),), backend=LOCAL),
    Exit("stream ApiError after first byte", "auto", 200, 502, stream=True,
         local=(Script(error_after_first=UpstreamFailure("reset")),), backend=LOCAL),
    Exit("stream unexpected exception after first byte", "auto", 200, 500, stream=True,
         local=(Script(error_after_first=ValueError("bad chunk")),), backend=LOCAL),
    Exit("stream without usage", "auto", 200, 200, stream=True, local=(Script(usage=False),),
         backend=LOCAL, extra={"stream_options": {"include_usage": True}}),
    Exit("stream with garbled usage", "auto", 200, 200, stream=True,
         local=(Script(garbled_usage=True),), backend=LOCAL),
    Exit("stream misses the local deadline, spills", "auto", 200, 200, stream=True,
         local=(Script(hang=True),), backend=PAID),
]


@pytest.mark.parametrize("case", EXITS, ids=[e.name for e in EXITS])
async def test_every_exit_settles_and_leaves_nothing_behind(h: Harness, case: Exit) -> None:
    h.local.then(*case.local)
    h.paid.then(*case.paid)
    h.fallback.then(*case.fallback)
    reply = await h.chat(case.model, stream=case.stream, **case.extra)
    if case.status >= 400:
        assert_openai_error(reply, case.status)
    else:
        assert reply.status_code == case.status, reply.text
    if case.stream and case.status == 200:
        events = sse_events(reply)
        if case.row_status == 200:
            assert events[-1] == "[DONE]"
        else:  # never a silent clean finish: the stream ends with an OpenAI error event
            assert set(events[-1]["error"]) == {"message", "type", "param", "code"}
    rows = await h.rows()
    assert [(r["status"], r["backend"]) for r in rows] == [(case.row_status, case.backend)]
    assert h.requests_total(str(case.row_status)) == 1
    await assert_clean(h)


async def test_unexpected_exception_is_one_log_line_without_the_body(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.local.then(Script(error=RuntimeError("secret-from-the-prompt")))
    reply = await h.chat("auto", messages=[{"role": "user", "content": "my-ssn-123"}])
    error = assert_openai_error(reply, 500)
    assert error["code"] == "internal_error" and "secret" not in error["message"]
    lines = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 1
    line = lines[0].getMessage()
    assert "RuntimeError" in line and reply.headers["x-request-id"] in line
    assert "secret" not in caplog.text and "my-ssn" not in caplog.text
    assert lines[0].exc_info is None  # no traceback spam
    await assert_clean(h)


async def test_cancelled_before_first_byte_settles_499(h: Harness) -> None:
    h.local.then(Script(hang=True))
    call = asyncio.create_task(h.chat("local"))
    await asyncio.wait_for(h.local.started.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert h.local.cancelled == 1
    assert [r["status"] for r in await h.rows()] == [499]
    await assert_clean(h)


async def test_non_stream_client_leaving_cancels_the_backend_call(h: Harness) -> None:
    h.local.then(Script(hang=True))
    leave = asyncio.Event()
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    driving = asyncio.create_task(leave_early(h.app, body, leave))
    await asyncio.wait_for(h.local.started.wait(), 5)
    leave.set()
    await driving
    assert h.local.cancelled == 1
    assert [r["status"] for r in await h.rows()] == [499]
    await assert_clean(h)


async def test_stream_client_leaving_before_first_byte_cancels_the_backend_call(
        h: Harness) -> None:
    h.local.then(Script(hang=True))
    leave = asyncio.Event()
    body = {"model": "local", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    driving = asyncio.create_task(leave_early(h.app, body, leave))
    await asyncio.wait_for(h.local.started.wait(), 5)
    leave.set()
    await driving
    assert h.local.cancelled == 1
    assert [r["status"] for r in await h.rows()] == [499]
    await assert_clean(h)


async def test_client_gone_while_sending_its_body_is_a_499_not_a_fault(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi" * 100}]}
    sent = await leave_early(h.app, body, asyncio.Event(), cut_body=True)
    assert sent[0]["status"] == 499
    assert h.requests_total("499") == 1 and h.requests_total("500") == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert h.local.calls == []
    await assert_clean(h)


async def test_stream_client_leaving_after_first_byte_settles_499(h: Harness) -> None:
    h.local.then(Script(hang_after_first=True))
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    sent = await leave_early(h.app, body, asyncio.Event(), on_first_byte=True)
    assert sent[0]["status"] == 200
    assert h.local.cancelled == 1
    assert [r["status"] for r in await h.rows()] == [499]
    await assert_clean(h)


async def test_reservation_released_when_the_paid_call_fails_unexpectedly(h: Harness) -> None:
    key = await h.budget_key("10")
    h.paid.then(Script(error=RuntimeError("boom")))
    assert_openai_error(await h.chat("paid", key=key), 500)
    assert await h.open_reservations() == 0 and await h.reserved_usd() == 0
    reply = await h.chat("paid", key=key)  # a reservation that settles normally
    assert reply.status_code == 200
    await assert_clean(h)


async def test_database_error_inside_the_reservation_frees_the_slot(h: Harness) -> None:
    key = await h.budget_key("10")
    async with h.ledger.transaction() as conn:  # a real database failure, not a stub
        await conn.execute(text("DROP TABLE budget_counters"))
    h.local.then(Script(error=UpstreamFailure("down")))  # auto: local fails, paid reserves
    assert_openai_error(await h.chat("auto", key=key), 500)
    assert [r["status"] for r in await h.rows()] == [500]
    assert h.inflight() == 0 and await h.open_reservations() == 0
    reply = await h.chat("auto")  # no key, no reservation: served locally as before
    assert reply.headers["x-spillgate-route"] == "auto;reason=local_ok"


async def test_budget_refusal_counts_and_leaves_nothing(h: Harness) -> None:
    key = await h.budget_key("0.0000001")
    error = assert_openai_error(await h.chat("paid", key=key, max_tokens=1000), 429)
    assert error["code"] == "budget_exhausted"
    assert h.requests_total("429") == 1
    await assert_clean(h)


async def test_half_open_probe_released_on_a_non_failure_exit(h: Harness) -> None:
    h.paid.then(Script(error=UpstreamFailure("down")))
    assert_openai_error(await h.chat("paid"), 502)
    assert h.breaker(PAID).state == "open"
    h.clock.now += 31  # half-open: the next call is the probe
    h.paid.then(Script(error=TypeError("bug")))
    assert_openai_error(await h.chat("paid"), 500)
    assert not h.breaker(PAID).probing  # released: the next call may probe again
    reply = await h.chat("paid")
    assert reply.status_code == 200 and h.breaker(PAID).state == "closed"
    await assert_clean(h)


async def test_cancelled_probe_is_released(h: Harness) -> None:
    h.fallback.then(Script(error=UpstreamFailure("down")))
    h.paid.then(Script(error=UpstreamFailure("down")))
    h.local.then(Script(error=UpstreamFailure("down")))
    assert_openai_error(await h.chat("auto"), 502)
    h.clock.now += 31
    h.local.then(Script(error=UpstreamFailure("down")))
    h.paid.then(Script(hang=True))
    h.paid.started.clear()
    call = asyncio.create_task(h.chat("auto"))
    await asyncio.wait_for(h.paid.started.wait(), 5)
    assert h.breaker(PAID).probing
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not h.breaker(PAID).probing and not h.breaker(FALLBACK).probing
    await assert_clean(h)


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}, 404),
    ({"model": "auto", "messages": []}, 400),
])
async def test_refused_requests_are_counted(h: Harness, body: Any, status: int) -> None:
    assert_openai_error(await h.post(body), status)
    assert h.requests_total(str(status)) == 1
    await assert_clean(h)


async def test_unauthenticated_requests_are_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPILLGATE_API_KEYS", "harness-static-key-0123456789")
    async with harness(tmp_path) as h:
        assert_openai_error(await h.chat("auto"), 401)
        assert h.requests_total("401") == 1
        reply = await h.chat("auto", key="harness-static-key-0123456789")
        assert reply.status_code == 200
