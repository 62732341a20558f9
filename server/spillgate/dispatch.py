"""Dispatch along a decision's chain of targets: retries per backend, breaker, fallback.

A target fails over to the next only before anything reached the client. For streams that
means: the first chunk is fetched here, inside the retry/fallback loop; once it is in hand the
stream is committed to that backend and a later failure ends the stream with an error event.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from spillgate.backends.base import JSON, Backend, UpstreamCall, UpstreamFailure
from spillgate.backends.reliability import CircuitBreaker, call_with_retries
from spillgate.errors import ApiError, ServiceUnavailable
from spillgate.routing.router import Decision, Target

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upstreams:
    backends: Mapping[str, Backend]
    breakers: Mapping[str, CircuitBreaker]
    attempts: Mapping[str, int]  # per backend: local engines 1 (fail over instead), APIs N


@dataclass(slots=True)
class OpenStream:
    target: Target
    first: JSON
    rest: AsyncIterator[JSON]
    failed_over: list[str]


# A hook run before each target is tried; it may refuse (e.g. a paid reservation that the
# budget cannot cover) by raising an ApiError, which moves on to the next target.
BeforeTarget = Callable[[Target], Awaitable[None]]


async def complete(
    up: Upstreams, decision: Decision, call_for: Callable[[Target], UpstreamCall],
    body: JSON, before: BeforeTarget,
) -> tuple[Target, JSON, list[str]]:
    async def run(target: Target, backend: Backend) -> JSON:
        return await backend.complete(call_for(target), body)

    target, result, failed = await _first_success(up, decision, before, run)
    return target, result, failed


async def open_stream(
    up: Upstreams, decision: Decision, call_for: Callable[[Target], UpstreamCall],
    body: JSON, before: BeforeTarget,
) -> OpenStream:
    async def run(target: Target, backend: Backend) -> tuple[JSON, AsyncIterator[JSON]]:
        iterator = aiter(backend.stream(call_for(target), body))
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            raise UpstreamFailure("upstream stream ended before any chunk") from None
        return first, iterator

    target, (first, rest), failed = await _first_success(up, decision, before, run)
    return OpenStream(target, first, rest, failed)


async def _first_success(
    up: Upstreams, decision: Decision, before: BeforeTarget,
    run: Callable[[Target, Backend], Awaitable[T]],
) -> tuple[Target, T, list[str]]:
    failed: list[str] = []
    last_error: ApiError | None = None
    for target in decision.targets:
        backend = up.backends[target.backend]
        try:
            await before(target)
        except ApiError as exc:  # e.g. the budget cannot cover this paid target
            failed.append(target.backend)
            last_error = exc
            continue
        try:
            result = await call_with_retries(
                functools.partial(run, target, backend),
                max_attempts=up.attempts.get(target.backend, 1),
                breaker=up.breakers[target.backend],
                backend=target.backend,
            )
        except UpstreamFailure as exc:
            failed.append(target.backend)
            last_error = _explain(target, exc)
            continue
        return target, result, failed
    if last_error is None:
        raise ServiceUnavailable("no backend is configured for this route")
    raise last_error


def _explain(target: Target, exc: UpstreamFailure) -> ApiError:
    """A local engine that cannot be reached is restarting or down: say so plainly."""
    if target.tier == "local" and exc.upstream_status in (503, 504):
        return ServiceUnavailable(
            f"local backend {target.backend} is unavailable (restarting or down); "
            "retry shortly", code="local_unavailable", retry_after_s=2.0,
        )
    return exc
