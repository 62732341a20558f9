"""The request path in one place: admit → classify → decide → reserve → dispatch → settle.

Routes in `spillgate.api` stay thin: they hand the raw body and headers here and turn the
returned `Reply` or `StreamReply` into an HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import orjson

from spillgate import dispatch
from spillgate.accounting.record import RequestRecord, Usage
from spillgate.backends.base import JSON, Endpoint, UpstreamCall
from spillgate.classify import Detector, TextExtractor, classify, parse_tags
from spillgate.errors import ApiError, ServiceUnavailable, UpstreamError
from spillgate.protocol import admit, max_output_tokens
from spillgate.routing.admission import InflightCounter
from spillgate.routing.features import requested as requested_features
from spillgate.routing.router import (
    BudgetView,
    Decision,
    LocalCapacity,
    RequestFacts,
    Route,
    Target,
    decide,
)
from spillgate.routing.routes import RouteTable
from spillgate.settings import ServerSettings
from spillgate.telemetry.metrics import GatewayMetrics

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # the status recorded when the client went away first (nginx's code)
T = TypeVar("T")


class Accountant(Protocol):
    """Budgets, cost and ledger rows (spillgate.accounting.accountant)."""

    def check_rate(self, key_id: str | None, tokens_estimate: int) -> None: ...
    def paid_allowed(self, key_id: str | None) -> bool: ...
    async def reserve(self, record: RequestRecord, target: Target) -> None: ...
    def open_row(self, record: RequestRecord) -> None: ...
    def served(self, record: RequestRecord) -> None: ...
    async def finish(self, record: RequestRecord) -> None: ...
    def budget_headers(self, key_id: str | None) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Client:
    key_id: str | None = None
    local_only: bool = False


@dataclass(slots=True)
class Node:
    """Everything the path needs, built once by `create_app`."""

    limits: ServerSettings
    routes: RouteTable
    upstreams: dispatch.Upstreams
    capacity: Callable[[], Mapping[str, LocalCapacity]]
    inflight: InflightCounter
    detector: Detector
    extract: TextExtractor
    accountant: Accountant
    metrics: GatewayMetrics
    priority_backends: frozenset[str] = frozenset()  # local engines honouring `priority`


@dataclass(slots=True)
class Reply:
    body: JSON
    headers: dict[str, str]


@dataclass(slots=True)
class StreamReply:
    chunks: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


async def serve(
    node: Node, endpoint: Endpoint, raw: bytes, headers: Mapping[str, str], client: Client,
    request_id: str,
) -> Reply | StreamReply:
    body, _ = admit(endpoint, raw, node.limits)
    route = node.routes.resolve(str(body["model"]))
    verdict = classify(body, headers, detector=node.detector, extract=node.extract,
                       key_local_only=client.local_only, route_local_only=route.local_only)
    for entity in verdict.classes:
        node.metrics.sensitive.labels(entity).inc()
    record = RequestRecord(
        request_id=request_id, key_id=client.key_id, route=route.name,
        stream=bool(body.get("stream")), started_at=time.time(), tags=parse_tags(headers),
        sensitivity=verdict.classes, max_output_tokens=max_output_tokens(body),
        prompt_estimate=len(raw) // 4,
    )
    node.accountant.check_rate(client.key_id, record.prompt_estimate + record.max_output_tokens)
    facts = RequestFacts(
        sensitive=verdict.sensitive, tier_pin=verdict.tier_pin,
        tokens_needed=record.prompt_estimate + record.max_output_tokens,
        features=requested_features(body),
    )
    decision = decide(facts, node.capacity(), BudgetView(node.accountant.paid_allowed(
        client.key_id)), route)
    _guard_sensitive(decision, facts)
    _set_priority(node, body, decision, facts)
    record.reason = decision.reason
    _assign(record, decision.first)
    if decision.first.tier == "local":
        record.claimed_backend = decision.first.backend
        node.inflight.enter(decision.first.backend)
    node.accountant.open_row(record)
    call_for = _call_factory(endpoint, request_id)

    async def before(target: Target) -> None:
        if target.tier == "api":
            await node.accountant.reserve(record, target)

    if record.stream:
        return await _stream(node, route, decision, record, body, call_for, before)
    return await _complete(node, route, decision, record, body, call_for, before)


def _guard_sensitive(decision: Decision, facts: RequestFacts) -> None:
    """Defence in depth: whatever the router said, sensitive data goes to local targets only."""
    if facts.sensitive and any(t.tier != "local" for t in decision.targets):
        raise ServiceUnavailable(
            "internal routing error: refused to send sensitive data to a paid API",
            code="sensitive_data",
        )


def _set_priority(node: Node, body: JSON, decision: Decision, facts: RequestFacts) -> None:
    """Sensitive requests cannot spill, so the engine admits them before spillable ones.
    A client's own `priority` is dropped: it must not jump the shared local queue."""
    body.pop("priority", None)
    if facts.sensitive and decision.first.backend in node.priority_backends:
        body["priority"] = -1


def _call_factory(endpoint: Endpoint, request_id: str) -> Callable[[Target], UpstreamCall]:
    def call_for(target: Target) -> UpstreamCall:
        return UpstreamCall(endpoint, request_id, target.model)

    return call_for


def _assign(record: RequestRecord, target: Target) -> None:
    record.backend, record.tier, record.model = target.backend, target.tier, target.model


def _served(node: Node, route: Route, record: RequestRecord, target: Target,
            failed: list[str]) -> None:
    _assign(record, target)
    if record.claimed_backend and target.tier != "local":
        node.inflight.leave(record.claimed_backend)  # no longer on the local engine
        record.claimed_backend = None
    if failed:
        record.reason = f"{record.reason}+fallback"
    if route.policy == "auto":
        node.metrics.record_auto(route.name, target.tier == "api", record.reason)
    node.accountant.served(record)


async def _settled_if_failed(node: Node, record: RequestRecord, call: Awaitable[T]) -> T:
    """Await the dispatch; if it fails or the client goes away, settle the row (and release
    the local slot) before the error propagates: no row left open, no slot leaked."""
    try:
        return await call
    except ApiError as exc:
        await _settle(node, record, exc.status)
        raise
    except asyncio.CancelledError:
        await _settle(node, record, CLIENT_CLOSED)
        raise


async def _complete(
    node: Node, route: Route, decision: Decision, record: RequestRecord, body: JSON,
    call_for: Callable[[Target], UpstreamCall], before: dispatch.BeforeTarget,
) -> Reply:
    began = time.perf_counter()
    target, result, failed = await _settled_if_failed(node, record, dispatch.complete(
        node.upstreams, decision, call_for, body, before))
    _served(node, route, record, target, failed)
    record.latency_s = time.perf_counter() - began
    usage = Usage.from_openai(result.get("usage"))
    if usage is None:
        record.usage = Usage(record.prompt_estimate, 0, 0, measured=False)
        await _settle(node, record, UpstreamError.status)
        raise UpstreamError(f"backend {target.backend} returned no usage")
    record.usage = usage
    await _settle(node, record, 200)
    return Reply(result, _headers(node, record))


async def _stream(
    node: Node, route: Route, decision: Decision, record: RequestRecord, body: JSON,
    call_for: Callable[[Target], UpstreamCall], before: dispatch.BeforeTarget,
) -> StreamReply:
    began = time.perf_counter()
    opened = await _settled_if_failed(node, record, dispatch.open_stream(
        node.upstreams, decision, call_for, body, before,
        local_deadline_s=route.local_deadline_s))
    failed = opened.failed_over
    if opened.deadline_missed:  # local was busy, not broken: a spill, not a fallback
        record.reason = "overflow_deadline"
        failed = [b for b in failed if b != decision.first.backend]
    _served(node, route, record, opened.target, failed)
    record.ttft_s = time.perf_counter() - began
    want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = _relay(node, record, opened, want_usage, began)
    # Start the relay now: a started generator always runs its `finally` (settle, release
    # the local slot), even when the client is gone before the server iterates the body.
    first = await anext(chunks)
    return StreamReply(_prefixed(first, chunks), _headers(node, record, with_cost=False))


async def _prefixed(first: bytes, rest: AsyncGenerator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def _relay(
    node: Node, record: RequestRecord, opened: dispatch.OpenStream, want_usage: bool,
    began: float,
) -> AsyncGenerator[bytes]:
    """Forward chunks; settle exactly once whether the stream ends, fails or is cancelled."""
    status, seen_tokens, usage = CLIENT_CLOSED, 0, None
    try:
        async for chunk in _chunks(opened):
            if "usage" in chunk and chunk["usage"] and not chunk.get("choices"):
                usage = Usage.from_openai(chunk["usage"])
                if want_usage:
                    yield _sse(chunk)
            else:
                seen_tokens += len(chunk.get("choices") or ())
                yield _sse(chunk)
        status = 200
        yield b"data: [DONE]\n\n"
    except ApiError as exc:
        status = exc.status
        log.warning("stream from %s failed after first byte: %s", record.backend, exc.message)
        # Never a silent clean finish: the client sees an OpenAI-shaped error event.
        yield _sse(exc.body())
    finally:
        # Close the upstream at once (a client that went away frees the engine's slot now,
        # not when the garbage collector gets to the generator).
        close = getattr(opened.rest, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        record.latency_s = time.perf_counter() - began
        record.usage = usage or Usage(record.prompt_estimate, 0, seen_tokens, measured=False)
        await _settle(node, record, status)


async def _chunks(opened: dispatch.OpenStream) -> AsyncIterator[JSON]:
    for chunk in opened.head:
        yield chunk
    async for chunk in opened.rest:
        yield chunk


def _sse(obj: JSON) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _settle(node: Node, record: RequestRecord, status: int) -> None:
    record.status = status
    if record.claimed_backend:
        node.inflight.leave(record.claimed_backend)
        record.claimed_backend = None
    try:
        await node.accountant.finish(record)
    except Exception:  # the ledger must not take the answer down; the row is recovered later
        log.exception("settling request %s failed", record.request_id)
    m = node.metrics
    m.tokens.labels(record.backend, "prompt").inc(record.usage.prompt_tokens)
    m.tokens.labels(record.backend, "completion").inc(record.usage.completion_tokens)
    if record.ttft_s is not None:
        m.ttft.labels(record.backend).observe(record.ttft_s)
    if record.latency_s is not None:
        m.duration.labels(record.backend).observe(record.latency_s)
    _count(node, record, status)


def _count(node: Node, record: RequestRecord, status: int) -> None:
    node.metrics.requests.labels(
        record.backend or "none", record.route, record.reason or "refused", str(status)
    ).inc()


def _headers(node: Node, record: RequestRecord, with_cost: bool = True) -> dict[str, str]:
    headers = {
        "x-spillgate-backend": record.backend,
        "x-spillgate-route": f"{record.route};reason={record.reason}",
    }
    if record.sensitivity:
        headers["x-spillgate-sensitivity"] = ",".join(sorted(record.sensitivity))
    if with_cost:
        headers["x-spillgate-cost-usd"] = f"{record.cost_usd:.8f}"
    headers.update(node.accountant.budget_headers(record.key_id))
    return headers
