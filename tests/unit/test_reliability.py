"""Retries honour Retry-After and stop; the breaker opens, probes half-open, and closes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.backends.base import UpstreamFailure
from spillgate.backends.http import parse_retry_after
from spillgate.backends.reliability import BreakerOpen, CircuitBreaker, call_with_retries
from spillgate.errors import InvalidRequest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10, clock=clock)
    for _ in range(3):
        breaker.before_call("b")
        breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen):
        breaker.before_call("b")
    clock.now = 10.0
    assert breaker.state == "half_open"
    breaker.before_call("b")  # the one probe
    with pytest.raises(BreakerOpen):
        breaker.before_call("b")  # a second caller waits for the probe's outcome
    breaker.record_failure()
    assert breaker.state == "open"  # failed probe: open again for another reset period
    clock.now = 20.0
    breaker.before_call("b")
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0


async def test_retries_until_success_and_honours_retry_after() -> None:
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise UpstreamFailure("busy", upstream_status=429, retry_after_s=0.2)
        return "ok"

    breaker = CircuitBreaker(5, 30)
    assert await call_with_retries(flaky, max_attempts=3, breaker=breaker, backend="b") == "ok"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.19 and calls[2] - calls[1] >= 0.19
    assert breaker.state == "closed"


async def test_attempts_are_bounded_and_the_last_failure_surfaces() -> None:
    count = 0

    async def down() -> str:
        nonlocal count
        count += 1
        raise UpstreamFailure("refused", upstream_status=503, retry_after_s=0)

    with pytest.raises(UpstreamFailure) as caught:
        await call_with_retries(down, max_attempts=4, breaker=CircuitBreaker(99, 30),
                                backend="b")
    assert count == 4 and caught.value.status == 503


async def test_client_errors_are_not_retried() -> None:
    count = 0

    async def bad_request() -> str:
        nonlocal count
        count += 1
        raise InvalidRequest("bad")

    breaker = CircuitBreaker(1, 30)
    with pytest.raises(InvalidRequest):
        await call_with_retries(bad_request, max_attempts=5, breaker=breaker, backend="b")
    assert count == 1 and breaker.state == "closed"


@pytest.mark.parametrize("ending", [InvalidRequest("bad"), RuntimeError("bug"),
                                    asyncio.CancelledError()])
async def test_a_probe_ending_without_a_verdict_is_released(ending: BaseException) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=10, clock=clock)
    breaker.before_call("b")
    breaker.record_failure()
    clock.now = 10.0  # half-open: the next call is the probe

    async def probe() -> str:
        raise ending

    with pytest.raises(type(ending)):
        await call_with_retries(probe, max_attempts=1, breaker=breaker, backend="b")
    assert breaker.state == "half_open" and not breaker.probing  # no verdict, not stuck

    async def healthy() -> str:
        return "ok"

    assert await call_with_retries(healthy, max_attempts=1, breaker=breaker, backend="b") == "ok"
    assert breaker.state == "closed"


NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


@given(st.integers(min_value=-86_400, max_value=86_400))
def test_retry_after_reads_an_http_date_as_seconds_from_now(offset_s: int) -> None:
    # The header as a server writes it (IMF-fixdate, GMT), built by the stdlib formatter.
    header = format_datetime(NOW + timedelta(seconds=offset_s), usegmt=True)
    assert parse_retry_after(header, NOW) == max(0, offset_s)  # a past date: retry now


def test_retry_after_reads_delta_seconds_and_rejects_garbage() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after("Wed, 02 Dec 2026 12:00:30 GMT", NOW) == 30.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after(None, NOW) is None
