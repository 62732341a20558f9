"""Dispatch along a decision's chain of targets: retries per backend, breaker, fallback.

A target fails over to the next only before anything reached the client. For streams that
means: the first chunk is fetched here, inside the retry/fallback loop; once it is in hand the
stream is committed to that backend and a later failure ends the stream with an error event.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from spillgate.backends.base import Backend, UpstreamCall, UpstreamFailure
from spillgate.backends.reliability import CircuitBreaker, call_with_retries
from spillgate.errors import ApiError, ServiceUnavailable
from spillgate.routing.router import Decision, Target
from spillgate.types import JSON

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upstreams:
    backends: Mapping[str, Backend]
    breakers: Mapping[str, CircuitBreaker]
    attempts: Mapping[str, int]  # per backend: local engines 1 (fail over instead), APIs N


@dataclass(slots=True)
class OpenStream:
    target: Target
    head: list[JSON]  # chunks up to the first read that brought output, that read's included
    rest: AsyncIterator[list[JSON]]  # then each read's chunks (Backend.stream_batches)
    failed_over: list[str]
    deadline_missed: bool = False  # the local target gave no first token in time


class DeadlineMissed(UpstreamFailure):
    """A local stream produced no first token before the route's deadline (not a fault of
    the engine: it is busy), so the request moves on to the paid target."""


# A hook run before each target is tried; it may refuse (e.g. a paid reservation that the
# budget cannot cover) by raising an ApiError, which moves on to the next target.
BeforeTarget = Callable[[Target], Awaitable[None]]


async def complete(
    up: Upstreams, decision: Decision, call_for: Callable[[Target], UpstreamCall],
    body: JSON, before: BeforeTarget,
) -> tuple[Target, JSON, list[str]]:
    async def run(target: Target, backend: Backend) -> JSON:
        return await backend.complete(call_for(target), body)

    target, result, failed, _ = await _first_success(up, decision, before, run)
    return target, result, failed


def _carries_output(chunk: JSON) -> bool:
    """True from the first chunk with generated text, a tool call or a finish reason (an
    engine may open a stream with a role-only chunk long before its first token)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if (delta.get("content") or delta.get("tool_calls") or choice.get("text")
                or choice.get("finish_reason")):
            return True
    return bool(chunk.get("usage"))


async def open_stream(
    up: Upstreams, decision: Decision, call_for: Callable[[Target], UpstreamCall],
    body: JSON, before: BeforeTarget, *, local_deadline_s: float | None = None,
) -> OpenStream:
    async def run(target: Target,
                  backend: Backend) -> tuple[list[JSON], AsyncIterator[list[JSON]]]:
        iterator = aiter(backend.stream_batches(call_for(target), body))
        head: list[JSON] = []
        while True:
            try:
                batch = await anext(iterator)
            except StopAsyncIteration:
                if head:
                    break
                raise UpstreamFailure("upstream stream ended before any chunk") from None
            head += batch
            if any(map(_carries_output, batch)):
                break
        return head, iterator

    target, (head, rest), failed, missed = await _first_success(
        up, decision, before, run, local_deadline_s)
    return OpenStream(target, head, rest, failed, missed)


async def _first_success(
    up: Upstreams, decision: Decision, before: BeforeTarget,
    run: Callable[[Target, Backend], Awaitable[T]], local_deadline_s: float | None = None,
) -> tuple[Target, T, list[str], bool]:
    failed: list[str] = []
    last_error: ApiError | None = None
    missed = False
    for index, target in enumerate(decision.targets):
        backend = up.backends[target.backend]
        try:
            await before(target)
        except ApiError as exc:  # e.g. the budget cannot cover this paid target
            failed.append(target.backend)
            last_error = exc
            continue
        # Only a local target with somewhere to go next races a deadline.
        deadline = local_deadline_s if (
            target.tier == "local" and index + 1 < len(decision.targets)) else None
        try:
            result = await _within(deadline, call_with_retries(
                functools.partial(run, target, backend),
                max_attempts=up.attempts.get(target.backend, 1),
                breaker=up.breakers.get(target.backend),  # None for local engines
                backend=target.backend,
            ))
        except UpstreamFailure as exc:
            failed.append(target.backend)
            missed = missed or isinstance(exc, DeadlineMissed)
            last_error = _explain(target, exc)
            continue
        return target, result, failed, missed
    if last_error is None:
        raise ServiceUnavailable("no backend is configured for this route")
    raise last_error


async def _within(deadline_s: float | None, call: Awaitable[T]) -> T:
    """Await `call`, cancelling it (which closes the upstream connection, so the engine
    drops the request) when it has not finished by the deadline."""
    if deadline_s is None:
        return await call
    try:
        async with asyncio.timeout(deadline_s):
            return await call
    except TimeoutError:
        raise DeadlineMissed(f"no first token within {deadline_s:.2f} s") from None


def _explain(target: Target, exc: UpstreamFailure) -> ApiError:
    """A local engine that cannot be reached is restarting or down: say so plainly."""
    if target.tier == "local" and exc.upstream_status in (503, 504):
        return ServiceUnavailable(
            f"local backend {target.backend} is unavailable (restarting or down); "
            "retry shortly", code="local_unavailable", retry_after_s=2.0,
        )
    return exc
