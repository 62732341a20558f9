"""Step 3 of the request path: look the request up in the response cache, and store answers.

`lookup` says, before routing, whether this request may use the cache at all, and answers
with a hit when there is one:
- `bypass`: the route caches nothing, the request is sensitive (never looked up, never
  stored: sensitive text stays out of every cache), `Cache-Control: no-store`, a sampled
  request (temperature > 0) on a route that did not opt in, or not a chat completion;
- `miss`: no entry (or `Cache-Control: no-cache`, which skips the lookup but may store);
- `hit`: an entry of the same tenant, route and shaping fields (keys.py), exact or,
  on a semantic route, similar enough and passing the guards (guards.py).

Only a complete, successful answer is stored: not an error, not a stream that was cut, not
an answer with tool calls unless the route opts in. The cost it avoids next time is what it
cost now (the settled row's cost), kept with the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from prometheus_client import CollectorRegistry

from spillgate.cache.guards import Facts, facts_of
from spillgate.cache.index import Vector
from spillgate.cache.keys import CacheKeys, build_keys, comparable_text, temperature_of
from spillgate.cache.metrics import CacheMetrics
from spillgate.cache.replay import StreamCollector, answer_of, calls_tools
from spillgate.cache.store import Hit, ResponseCache
from spillgate.embeddings import LocalEmbedder, load_local_embedder
from spillgate.errors import describe
from spillgate.ledger.record import RequestRecord
from spillgate.settings import RouteSettings, Settings
from spillgate.types import JSON, Endpoint

log = logging.getLogger(__name__)
CACHE_HEADER = "x-spillgate-cache"
CACHE_BACKEND = "cache"  # x-spillgate-backend and the ledger's backend of a hit
Mode = Literal["off", "exact", "semantic"]
Status = Literal["hit", "miss", "bypass"]


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    mode: Mode = "off"
    temperature: bool = False  # cache sampled (temperature > 0) requests too
    tool_calls: bool = False  # store answers that call tools

    @classmethod
    def of(cls, rs: RouteSettings) -> RoutePolicy:
        return cls(rs.cache, rs.cache_temperature, rs.cache_tool_calls)


@dataclass(slots=True)
class Ticket:
    """What the path carries from the lookup to the store."""

    status: Status
    keys: CacheKeys | None = None
    policy: RoutePolicy = field(default_factory=RoutePolicy)
    store: bool = False
    vector: Vector | None = None
    facts: Facts | None = None
    hit: Hit | None = None


BYPASS = Ticket("bypass")


def cache_directives(headers: Mapping[str, str]) -> frozenset[str]:
    raw = headers.get("cache-control", "")
    return frozenset(part.strip().lower().split("=")[0] for part in raw.split(",") if part.strip())


class CacheStep:
    def __init__(self, cache: ResponseCache, policies: Mapping[str, RoutePolicy],
                 threshold: float, embedder: LocalEmbedder | None,
                 registry: CollectorRegistry | None = None) -> None:
        self.cache = cache
        self._policies = dict(policies)
        self._threshold = threshold
        self._embedder = embedder
        self._metrics = None if registry is None else CacheMetrics(registry, cache)

    @classmethod
    def from_settings(cls, settings: Settings,
                      registry: CollectorRegistry | None = None) -> CacheStep | None:
        """The step, or None when no route caches (nothing to look up, no model loaded)."""
        policies = {rs.name: RoutePolicy.of(rs) for rs in settings.routes}
        if all(p.mode == "off" for p in policies.values()):
            return None
        semantic = any(p.mode == "semantic" for p in policies.values())
        embedder = load_local_embedder() if semantic else None
        c = settings.cache
        cache = ResponseCache(ttl_s=c.ttl_s, max_entries=c.max_entries, max_bytes=c.max_bytes,
                              dims=embedder.dims if embedder else 1)
        return cls(cache, policies, c.threshold, embedder, registry)

    def lookup(self, endpoint: Endpoint, route: str, body: JSON, headers: Mapping[str, str],
               tenant: str, sensitive: bool) -> Ticket:
        """The request's ticket; a failure of the cache itself is a bypass, never an error."""
        policy = self._policies.get(route, RoutePolicy())
        directives = cache_directives(headers)
        bypass = _bypass_reason(policy, endpoint, body, directives, sensitive)
        ticket = BYPASS
        if bypass is None:
            try:
                ticket = self._lookup(policy, route, body, directives, tenant)
            except Exception as exc:
                log.error("response cache lookup failed, bypassed: %s", describe(exc))
                bypass = "error"
        if self._metrics is not None:
            kind = ticket.hit.kind if ticket.hit is not None else policy.mode
            self._metrics.looked_up(route, kind, ticket.status, bypass)
        return ticket

    def _lookup(self, policy: RoutePolicy, route: str, body: JSON, directives: frozenset[str],
                tenant: str) -> Ticket:
        keys = build_keys(tenant, route, body)
        ticket = Ticket("miss", keys, policy, store=True)
        if policy.mode == "semantic" and keys.query is not None and self._embedder:
            ticket.vector = self._embedder.embed([comparable_text(keys.query)])[0]
            ticket.facts = facts_of(keys.query)
        if "no-cache" in directives:
            return ticket
        ticket.hit = self.cache.find(keys, ticket.vector, ticket.facts, self._threshold)
        if ticket.hit is not None:
            ticket.status = "hit"
        return ticket

    def on_hit(self, record: RequestRecord, ticket: Ticket) -> None:
        """The ledger row of a hit: nothing consumed, cost 0, the original cost avoided."""
        if ticket.hit is None:
            return
        entry = ticket.hit.entry
        record.cache = ticket.hit.kind
        record.backend = CACHE_BACKEND
        record.model = str(entry.answer.get("model") or record.model)
        record.reason = f"cache_{ticket.hit.kind}"
        record.avoided_usd = entry.avoided_usd
        record.saved_tokens = entry.saved_tokens

    def remember(self, ticket: Ticket, result: JSON, record: RequestRecord) -> None:
        """Store a successful JSON answer (called after its row settled)."""
        if ticket.store and not record.sensitivity and record.status == 200:
            answer = answer_of(result)  # None for anything that is not a plain answer
            if answer is not None:
                self._put(ticket, answer, record)

    def collector(self, ticket: Ticket) -> StreamCollector | None:
        return StreamCollector() if ticket.store else None

    def remember_stream(self, ticket: Ticket, collected: StreamCollector,
                        record: RequestRecord) -> None:
        """Store a streamed answer that completed (status 200, every choice finished)."""
        if record.status != 200 or record.sensitivity:
            return
        if collected.tool_calls and not ticket.policy.tool_calls:
            return
        usage = record.usage
        answer = collected.answer({
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens})
        if answer is not None:
            self._put(ticket, answer, record)

    def _put(self, ticket: Ticket, answer: JSON, record: RequestRecord) -> None:
        if ticket.keys is None or (calls_tools(answer) and not ticket.policy.tool_calls):
            return
        usage = record.usage
        try:
            self.cache.put(ticket.keys, answer, avoided_usd=record.cost_usd or Decimal(0),
                           saved_tokens=usage.prompt_tokens + usage.completion_tokens,
                           vector=ticket.vector, facts=ticket.facts)
        except Exception as exc:  # the answer is served already; the cache only misses it
            log.error("response cache store failed: %s", describe(exc))


def _bypass_reason(policy: RoutePolicy, endpoint: Endpoint, body: JSON,
                   directives: frozenset[str], sensitive: bool) -> str | None:
    """Why this request may not use the cache at all (module docstring), None if it may."""
    if policy.mode == "off":
        return "route_off"
    if endpoint != "chat/completions":
        return "endpoint"
    if sensitive:  # never looked up, never stored
        return "sensitive"
    if "no-store" in directives:
        return "no_store"
    if temperature_of(body) > 0 and not policy.temperature:
        return "temperature"
    return None
