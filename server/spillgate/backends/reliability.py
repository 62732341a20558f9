"""Retries (tenacity) and a circuit breaker per backend.

Rules the service relies on:
- only `UpstreamFailure` is retried (connect errors, 429, 5xx, timeouts); a client's own
  cancellation is never a backend failure and never counts against the breaker;
- a Retry-After from the upstream is honoured (capped), otherwise exponential backoff with
  jitter;
- the breaker opens after N consecutive failures, lets one half-open probe through after the
  reset time, and closes on its success;
- a probe that ends any other way (cancelled, a client error, a bug) is released without a
  verdict, so the next call probes again: the breaker is never left waiting for an outcome
  that will not come.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from spillgate.backends.base import UpstreamFailure

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]
MAX_RETRY_AFTER_S = 10.0


class BreakerOpen(UpstreamFailure):
    """The breaker refused the call without trying: move on to the next target."""


@dataclass
class CircuitBreaker:
    failure_threshold: int
    reset_after_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_after_s:
            return "half_open"
        return "open"

    def before_call(self, backend: str) -> None:
        state = self.state
        if state == "open" or (state == "half_open" and self.probing):
            raise BreakerOpen(f"backend {backend} is failing; circuit open")
        if state == "half_open":
            self.probing = True

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def release_probe(self) -> None:
        """The call ended without saying anything about the backend's health."""
        self.probing = False

    def record_failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamFailure) and not isinstance(exc, BreakerOpen)


def _wait_after(exc: BaseException | None, attempt_number: int) -> float:
    """Retry-After when the upstream gave one (capped), else exponential backoff with jitter."""
    if isinstance(exc, UpstreamFailure) and exc.retry_after_s is not None:
        return min(exc.retry_after_s, MAX_RETRY_AFTER_S)
    return random.uniform(0.0, min(2.0, 0.1 * 2 ** (attempt_number - 1)))


async def _guarded(attempt: Callable[[], Awaitable[T]], breaker: CircuitBreaker | None,
                   backend: str) -> T:
    if breaker is None:  # local engines: their supervisor tracks health, no breaker
        return await attempt()
    breaker.before_call(backend)
    try:
        result = await attempt()
    except UpstreamFailure:
        breaker.record_failure()
        raise
    except BaseException:  # cancelled, refused as invalid, or a bug: no verdict on health
        breaker.release_probe()
        raise
    breaker.record_success()
    return result


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]], *, max_attempts: int, breaker: CircuitBreaker | None,
    backend: str,
) -> T:
    """Run `attempt` until it succeeds, a non-retryable error occurs, or attempts run out.

    The first attempt runs bare (the common case pays no retry machinery); only after a
    retryable failure does tenacity take over the remaining attempts."""
    try:
        return await _guarded(attempt, breaker, backend)
    except UpstreamFailure as exc:
        if max_attempts <= 1 or not _retryable(exc):
            raise
        await asyncio.sleep(_wait_after(exc, 1))

    def wait(state: RetryCallState) -> float:  # attempt 1 of this loop is attempt 2 overall
        failure = state.outcome.exception() if state.outcome else None
        return _wait_after(failure, state.attempt_number + 1)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_attempts - 1),
        wait=wait,
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    async for attempt_state in retrying:
        with attempt_state:
            return await _guarded(attempt, breaker, backend)
    raise AssertionError("unreachable: tenacity reraises the last failure")  # pragma: no cover
