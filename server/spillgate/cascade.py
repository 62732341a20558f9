"""The cascade step of the request path (`policy: cascade`): draft locally, judge, escalate.

The router chose the route's local model with the reason `cascade_draft` (spillgate.routing
.router); from there:

1. the local model drafts the answer, asked for token log-probabilities even when the client
   did not ask (they are stripped from the answer again unless it did);
2. `routing.cascade` turns them into a confidence and compares it with the route's threshold;
3. a confident draft is the answer (`cascade_kept`: no paid call at all); an unsure one is
   escalated to the paid chain (`cascade_escalated`), whose reservation and price are those
   of any paid call. The draft's hardware share goes on the same row (`draft_usd`), beside
   the paid cost.

Sensitive requests never get here: the router keeps them local (`sensitive_local`) and the
service refuses any chain that would leave the node. A stream is drafted only when the route
buffers (`cascade.stream: buffer`): the answer then goes out as one buffered stream; otherwise
a stream on a cascade route is served by the local model like a plain local-first request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import orjson

from spillgate import dispatch, stream_cost
from spillgate.backends.base import UpstreamCall
from spillgate.errors import ApiError
from spillgate.ledger.record import RequestRecord
from spillgate.life import RequestLife
from spillgate.routing import cascade as rule
from spillgate.routing.router import Decision, Route, Target
from spillgate.types import JSON, Endpoint

log = logging.getLogger(__name__)
DRAFT = rule.DRAFT
ESCALATION_FAILED = "cascade_escalation_failed"  # the paid chain failed: the draft answered


def plan(route: Route, decision: Decision, endpoint: Endpoint, stream: bool) -> Decision:
    """The router's `cascade_draft`, or what replaces it when there is nothing to draft: an
    embeddings call, or a stream on a route that does not buffer (served local-first)."""
    if decision.reason != rule.DRAFT or route.cascade is None:
        return decision
    if endpoint == "embeddings":
        return Decision(decision.targets, "local_ok")
    if stream and route.cascade.stream != "buffer":
        return Decision(decision.targets, rule.STREAM_LOCAL)
    return decision


def asked_logprobs(body: JSON) -> bool:
    logprobs = body.get("logprobs")
    return logprobs is not None and logprobs is not False  # legacy completions: 0 asks too


def draft_body(body: JSON, endpoint: Endpoint) -> JSON:
    """The request as the local model gets it: not streamed, with log-probabilities."""
    draft = plain_body(body)
    if not asked_logprobs(draft):
        draft["logprobs"] = True if endpoint == "chat/completions" else 1
    return draft


def plain_body(body: JSON) -> JSON:
    """A buffered copy: the answer is judged (or relayed) whole."""
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    plain["stream"] = False
    return plain


def strip_logprobs(answer: JSON) -> JSON:
    for choice in answer.get("choices") or ():
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
    return answer


async def complete(
    life: RequestLife, route: Route, record: RequestRecord, up: dispatch.Upstreams,
    decision: Decision, call_for: Callable[[Target], UpstreamCall], body: JSON,
    before: dispatch.BeforeTarget,
) -> tuple[Target, JSON, list[str]]:
    """Serve one cascade request (dispatch.complete's shape: target, answer, failed)."""
    config = route.cascade or rule.CascadeRule()
    local, paid = decision.first, tuple(t for t in decision.targets[1:] if t.tier == "api")
    endpoint = call_for(local).endpoint
    try:
        _, draft, _ = await dispatch.complete(
            up, Decision((local,), rule.DRAFT), call_for, draft_body(body, endpoint), before)
    except ApiError:
        if not paid:
            raise
        record.reason = rule.DRAFT_FAILED
        return await _escalate(life, record, up, paid, call_for, body, before)
    record.confidence = rule.confidence(draft, config)
    kept = rule.keep(record.confidence, config)
    if kept or not paid:  # no paid target left (budget): the draft is all there is
        record.reason = rule.KEPT if kept else rule.NO_BUDGET
        _count(life, route, record.reason)
        return local, draft if asked_logprobs(body) else strip_logprobs(draft), []
    record.reason = rule.ESCALATED
    _count(life, route, record.reason)
    try:
        return await _escalate(life, record, up, paid, call_for, body, before)
    except ApiError as exc:  # the paid chain failed: a draft is better than an error
        log.warning("cascade escalation of %s failed (%s); serving the draft",
                    record.request_id, exc.code)
        record.reason = ESCALATION_FAILED
        return local, draft if asked_logprobs(body) else strip_logprobs(draft), []


async def _escalate(
    life: RequestLife, record: RequestRecord, up: dispatch.Upstreams, paid: tuple[Target, ...],
    call_for: Callable[[Target], UpstreamCall], body: JSON, before: dispatch.BeforeTarget,
) -> tuple[Target, JSON, list[str]]:
    # The draft is done with the engine: its hardware share so far is the row's draft cost
    # (not lost as unattributed busy time, as a spill that leaves the engine would be).
    record.draft_usd += life.node.accountant.draft_done(record)
    life.release_slot()
    return await dispatch.complete(up, Decision(paid, record.reason), call_for,
                                   plain_body(body), before)


def _count(life: RequestLife, route: Route, outcome: str) -> None:
    life.node.metrics.cascade.labels(route.name, outcome).inc()


async def as_stream(answer: JSON, include_usage: bool,
                    record: RequestRecord) -> AsyncIterator[bytes]:
    """A buffered answer as an OpenAI stream: one chunk per choice, the usage, [DONE]. The
    row settled before the first frame, so the frames end as every stream's do
    (stream_cost): the cost on the usage chunk and in an SSE comment before [DONE]."""
    base = {"id": answer.get("id", ""), "created": answer.get("created", 0),
            "model": answer.get("model", "")}
    chat = answer.get("object") == "chat.completion"
    kind = "chat.completion.chunk" if chat else "text_completion"
    for choice in answer.get("choices") or ():
        part = dict(choice)
        if chat:
            part["delta"] = part.pop("message", None) or {}
        yield _sse({**base, "object": kind, "choices": [part]})
    usage_chunk = ({**base, "object": kind, "choices": [], "usage": answer["usage"]}
                   if include_usage and answer.get("usage") else None)
    yield stream_cost.closing(record, usage_chunk)


def _sse(obj: JSON) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
