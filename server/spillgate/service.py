"""The request path in one place: admit → classify → decide → reserve → dispatch → settle.

Routes in `spillgate.api` stay thin: they hand the raw body and headers here and turn the
returned `Reply` or `StreamReply` into an HTTP response.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from spillgate import cascade, dispatch, stream_cost, stream_relay
from spillgate.backends.base import UpstreamCall
from spillgate.cache import replay as cache_replay
from spillgate.cache.keys import tenant_of
from spillgate.cache.step import BYPASS, CACHE_HEADER, CacheStep, Ticket
from spillgate.classify import Detector, TextExtractor, classify_async, parse_tags
from spillgate.errors import ApiError, InternalError, ServiceUnavailable, UpstreamError
from spillgate.ledger.record import RequestRecord, Usage, usd_text
from spillgate.life import RequestLife
from spillgate.protocol import admit, max_output_tokens
from spillgate.routing import arms
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
from spillgate.routing.stage_rules import StageRule
from spillgate.settings import ServerSettings
from spillgate.steering import dispatch_choice, steer
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.tenancy.budgets import prompt_bound
from spillgate.types import JSON, Client, Endpoint

log = logging.getLogger(__name__)
SENSITIVITY_HEADER = "x-spillgate-sensitivity"


class Accountant(Protocol):
    """Budgets, cost and ledger rows (spillgate.accountant)."""

    async def check_rate(self, key_id: str | None, tokens_estimate: int) -> None: ...
    def paid_allowed(self, key_id: str | None) -> bool: ...
    def budget_view(self, key_id: str | None) -> BudgetView: ...
    async def reserve(self, record: RequestRecord, target: Target,
                      chain: Sequence[Target] = ()) -> None: ...
    def open_row(self, record: RequestRecord) -> None: ...
    def dispatched(self, record: RequestRecord, target: Target) -> None: ...
    def draft_done(self, record: RequestRecord) -> Decimal: ...
    def progress(self, record: RequestRecord, tokens: int) -> None: ...
    def served(self, record: RequestRecord) -> None: ...
    def finish(self, record: RequestRecord) -> Callable[[], Awaitable[None]] | None: ...
    def budget_headers(self, key_id: str | None) -> dict[str, str]: ...


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
    rules: tuple[StageRule, ...] = ()  # stage rules, matched before anything else
    cache: CacheStep | None = None  # the response cache (step 3); None: no route caches


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
    """Serve one request. `RequestLife` owns its row, local slot, reservation and metrics
    through every exit (see spillgate.life)."""
    async with RequestLife(node, request_id) as life:
        return await _serve(life, endpoint, raw, headers, client)


async def _serve(
    life: RequestLife, endpoint: Endpoint, raw: bytes, headers: Mapping[str, str],
    client: Client,
) -> Reply | StreamReply:
    node, request_id = life.node, life.request_id
    body, _ = admit(endpoint, raw, node.limits)
    features, tags = requested_features(body), parse_tags(headers)
    steered = steer(node.rules, node.routes, node.routes.resolve(str(body["model"])), endpoint,
                    client.key_id, tags, len(raw) // 4, features)
    route = arms.choose(steered.route,
                        headers.get(arms.ARM_KEY_HEADER) or client.key_id or request_id)
    life.route = route.name
    verdict = await classify_async(
        body, headers, detector=node.detector, extract=node.extract,
        key_local_only=client.local_only, route_local_only=route.local_only,
        body_bytes=len(raw))
    for entity in verdict.classes:
        node.metrics.sensitive_count(entity).inc()
    with _sensitivity_on_refusal(verdict.classes):
        record = RequestRecord(
            request_id=request_id, key_id=client.key_id, route=route.name,
            stream=bool(body.get("stream")), started_at=time.time(), tags=tags,
            sensitivity=verdict.classes,
            max_output_tokens=0 if endpoint == "embeddings" else max_output_tokens(body),
            prompt_estimate=len(raw) // 4, prompt_bound=prompt_bound(raw, body),
            arm=route.arm,
        )
        tokens_needed = record.prompt_estimate + record.max_output_tokens
        await node.accountant.check_rate(client.key_id, tokens_needed)
        ticket = BYPASS if node.cache is None else node.cache.lookup(
            endpoint, route.name, body, headers,
            tenant_of(client.key_id, client.cache_namespace), verdict.sensitive)
        if ticket.hit is not None:
            return await _replay(life, record, body, ticket)
        tier_pin = steered.tier_pin or verdict.tier_pin
        facts = RequestFacts(
            sensitive=verdict.sensitive, tier_pin=tier_pin, tokens_needed=tokens_needed,
            features=features, pinned_by=steered.pinned_by,
            dispatch=await dispatch_choice(route, endpoint, body, verdict.sensitive, tier_pin),
        )
        decision = decide(facts, node.capacity(), node.accountant.budget_view(client.key_id),
                          route)
        _guard_sensitive(decision, facts)
        decision = cascade.plan(route, decision, endpoint, record.stream)
        _set_priority(node, body, decision, facts)
        record.reason = steered.reason(decision.reason)
        _assign(record, decision.first)
        life.begin(record, decision.first)
        call_for = _call_factory(endpoint, request_id)

        async def before(target: Target) -> None:
            if target.tier == "api":
                await node.accountant.reserve(record, target, decision.targets)
            else:  # the hardware is busy for this request from now until it settles
                node.accountant.dispatched(record, target)

        if decision.reason == cascade.DRAFT:  # drafted locally, judged, maybe escalated
            reply = await _complete(life, route, decision, record, body, call_for, before,
                                    ticket, functools.partial(cascade.complete, life, route,
                                                              record))
            if not record.stream:
                return reply
            want_usage = stream_relay.wants_usage(body)
            return StreamReply(cascade.as_stream(reply.body, want_usage, record), reply.headers)
        if record.stream:
            return await _stream(life, route, decision, record, body, call_for, before, ticket)
        return await _complete(life, route, decision, record, body, call_for, before, ticket)


@contextlib.contextmanager
def _sensitivity_on_refusal(classes: frozenset[str]) -> Iterator[None]:
    """A refusal (503 local_unavailable, 403 on an api pin, …) names the classes that kept
    the request local, as a served answer does; never the values."""
    try:
        yield
    except ApiError as exc:
        if classes:
            exc.headers.setdefault(SENSITIVITY_HEADER, ",".join(sorted(classes)))
        raise


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


def _served(life: RequestLife, route: Route, record: RequestRecord, target: Target,
            failed: list[str]) -> None:
    _assign(record, target)
    if target.tier != "local":
        life.release_slot()  # no longer on the local engine
    if failed:
        record.reason = f"{record.reason}+fallback"
    if route.policy == "auto":
        life.node.metrics.record_auto(route.name, target.tier == "api", record.reason)
    life.node.accountant.served(record)


async def _replay(life: RequestLife, record: RequestRecord, body: JSON,
                  ticket: Ticket) -> Reply | StreamReply:
    """A cache hit: its row (cost 0, the avoided cost), then the answer as the client asked."""
    if life.node.cache is None or ticket.hit is None:
        raise InternalError("cache hit without a cache")
    life.node.cache.on_hit(record, ticket)
    life.record = record
    await life.settle(200)
    headers = _headers(life.node, record) | {CACHE_HEADER: "hit"}
    answer, model = ticket.hit.entry.answer, str(body["model"])
    if not record.stream:
        return Reply(cache_replay.completion(answer, model), headers)
    want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = cache_replay.sse_events(answer, model, want_usage,
                                     lambda usage: stream_cost.final_frames(record, usage))
    return StreamReply(_events(b"".join(events)), headers)


async def _events(events: bytes) -> AsyncIterator[bytes]:
    yield events  # the whole answer is at hand: one write


async def _complete(
    life: RequestLife, route: Route, decision: Decision, record: RequestRecord, body: JSON,
    call_for: Callable[[Target], UpstreamCall], before: dispatch.BeforeTarget, ticket: Ticket,
    run: Callable[..., Awaitable[tuple[Target, JSON, list[str]]]] = dispatch.complete,
) -> Reply:
    began = time.perf_counter()
    target, result, failed = await run(life.node.upstreams, decision, call_for, body, before)
    _served(life, route, record, target, failed)
    record.latency_s = time.perf_counter() - began
    usage = stream_relay.usage_of(result.get("usage"))
    if usage is None:
        record.usage = Usage(record.prompt_estimate, 0, 0, measured=False)
        raise UpstreamError(f"backend {target.backend} returned no usable usage")
    record.usage = usage
    await life.settle(200)
    if life.node.cache is not None:
        life.node.cache.remember(ticket, result, record)
    return Reply(result, _headers(life.node, record) | {CACHE_HEADER: ticket.status})


async def _stream(
    life: RequestLife, route: Route, decision: Decision, record: RequestRecord, body: JSON,
    call_for: Callable[[Target], UpstreamCall], before: dispatch.BeforeTarget, ticket: Ticket,
) -> StreamReply:
    began = time.perf_counter()
    opened = await dispatch.open_stream(
        life.node.upstreams, decision, call_for, body, before,
        local_deadline_s=route.local_deadline_s)
    life.on_exit(functools.partial(stream_relay.close_stream, opened.rest))
    failed = opened.failed_over
    if opened.deadline_missed:  # local was busy, not broken: a spill, not a fallback
        record.reason = "overflow_deadline"
        failed = [b for b in failed if b != decision.first.backend]
    _served(life, route, record, opened.target, failed)
    record.ttft_s = time.perf_counter() - began
    want_usage = stream_relay.wants_usage(body)
    chunks = stream_relay.relay(life, record, opened, want_usage, began, ticket)
    # Start the relay now: a started generator always runs its `finally` (settle, release
    # the local slot), even when the client is gone before the server iterates the body.
    first = await anext(chunks)
    life.hand_over()
    headers = _headers(life.node, record, with_cost=False) | {CACHE_HEADER: ticket.status}
    return StreamReply(stream_relay.prefixed(first, chunks), headers)


def _headers(node: Node, record: RequestRecord, with_cost: bool = True) -> dict[str, str]:
    headers = {
        "x-spillgate-backend": record.backend,
        "x-spillgate-route": f"{record.route};reason={record.reason}",
    }
    if record.sensitivity:
        headers[SENSITIVITY_HEADER] = ",".join(sorted(record.sensitivity))
    if with_cost:
        headers["x-spillgate-cost-usd"] = usd_text(record.cost_usd)
    headers.update(node.accountant.budget_headers(record.key_id))
    return headers
