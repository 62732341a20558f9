"""The routing decision: a pure function of (request facts, capacity, budget, route).

No I/O, no clock, no HTTP request: everything it needs arrives as immutable snapshots, so the
whole policy is table-tested. It returns an ordered chain of targets (the first that serves
wins) and a reason code, or raises the ApiError the client must get.

The sensitivity boundary is enforced here and checked again by the service before dispatch:
a sensitive request's chain never contains a paid target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from spillgate.errors import InvalidRequest, PermissionDenied, RateLimited, ServiceUnavailable
from spillgate.routing.cascade import DRAFT, CascadeRule
from spillgate.routing.learned import Dispatcher
from spillgate.types import Tier

Policy = Literal["local", "api", "auto", "cascade"]


@dataclass(frozen=True, slots=True)
class Target:
    backend: str
    model: str  # the model name sent upstream
    tier: Tier
    context_length: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    policy: Policy
    local: Target | None
    paid: tuple[Target, ...]  # primary paid model, then fallbacks in order
    local_only: bool = False
    on_budget_exhausted: Literal["local", "reject"] = "local"
    ttft_slo_s: float = 2.0
    local_deadline_s: float | None = None  # auto streams: first-token deadline of local
    dispatcher: Dispatcher | None = None  # auto routes: the learned dispatcher, if any
    cascade: CascadeRule | None = None  # policy cascade: how a draft is judged
    arm: str = ""  # the canary arm this route is (routing.arms), "" when not split
    arms: tuple[tuple[str, float, Route], ...] = ()  # (name, weight, the arm's route)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    sensitive: bool
    tier_pin: Tier | None = None
    tokens_needed: int = 0  # prompt estimate + max output tokens
    features: frozenset[str] = frozenset()  # routing.features.requested(body)
    pinned_by: str = "x-spillgate-tier"  # who set tier_pin (the header, or a stage rule)
    dispatch: Tier | None = None  # the learned dispatcher's choice (auto routes only)


@dataclass(frozen=True, slots=True)
class RouteLoad:
    """The overflow controller's view of one (route, local backend) pair."""

    spill_reason: str | None = None  # spill every auto request (engine saturated)
    admit_limit: int | None = None  # requests in flight at which new ones spill
    limit_reason: str = "overflow_queue"  # reason code of a spill caused by admit_limit


@dataclass(frozen=True, slots=True)
class LocalCapacity:
    """What the router knows about one local backend right now."""

    ready: bool
    queue_full: bool = False
    spill_reason: str | None = None  # backend-wide: every route spills
    inflight: int = 0  # requests on the engine now (live gateway count + other clients)
    unsupported: frozenset[str] = frozenset()  # request features the engine cannot serve
    routes: Mapping[str, RouteLoad] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class BudgetView:
    paid_allowed: bool = True  # remaining paid budget covers this request's worst case
    guard_open: bool = False  # the spend guard (node or this key) holds paid traffic back
    guard_fallback_local: bool = False  # paid-only routes then use their `local` model
    guard_retry_after_s: float = 60.0  # until the guard's cool-down ends


@dataclass(frozen=True, slots=True)
class Decision:
    targets: tuple[Target, ...]
    reason: str

    @property
    def first(self) -> Target:
        return self.targets[0]


def decide(
    facts: RequestFacts,
    capacity: Mapping[str, LocalCapacity],
    budget: BudgetView,
    route: Route,
) -> Decision:
    sensitive = facts.sensitive or route.local_only
    if facts.tier_pin == "api" and sensitive:
        raise PermissionDenied(
            f"{facts.pinned_by}: api refused: this request carries sensitive data, which never "
            "leaves the node",
            code="sensitive_data",
        )
    policy: Policy = facts.tier_pin or route.policy
    if policy == "local" or (policy in ("auto", "cascade") and sensitive):
        _refuse_unsupported(route, capacity, facts, sensitive)
        return _local_only(route, capacity, sensitive)
    if policy == "api":
        if sensitive:
            raise PermissionDenied(
                f"model {route.name} is a paid API and this request carries sensitive data, "
                "which never leaves the node; use a local model",
                code="sensitive_data",
            )
        if budget.guard_open:
            return _guarded(route, capacity, facts, budget, paid_only=True)
        return _paid(route, facts, budget, "api_policy" if facts.tier_pin is None
                     else "pinned_api")
    if budget.guard_open:
        return _guarded(route, capacity, facts, budget, paid_only=False)
    decision = _auto(route, facts, capacity, budget)
    if policy == "cascade" and decision.reason == "local_ok":
        return Decision(decision.targets, DRAFT)  # the cascade step judges the draft
    return decision


# One shared value (it is frozen): a frozen dataclass costs ~1.5 µs to build, and
# `capacity.get`'s default was built on every request even when the backend is there.
_NOT_READY = LocalCapacity(ready=False)


def _local_state(route: Route, capacity: Mapping[str, LocalCapacity]) -> LocalCapacity:
    if route.local is None:
        return _NOT_READY
    return capacity.get(route.local.backend, _NOT_READY)


def _local_only(
    route: Route, capacity: Mapping[str, LocalCapacity], sensitive: bool
) -> Decision:
    state = _local_state(route, capacity)
    if route.local is None or not state.ready:
        why = "sensitive data is served only by local backends, and " if sensitive else ""
        raise ServiceUnavailable(
            f"{why}no local backend can serve model {route.name} right now (starting, "
            "restarting or down); retry shortly",
            code="local_unavailable",
            retry_after_s=2.0,
        )
    reason = "sensitive_local" if sensitive and route.policy != "local" else "local_policy"
    return Decision((route.local,), reason)


def _missing(state: LocalCapacity, facts: RequestFacts) -> list[str]:
    return sorted(facts.features & state.unsupported)


def _refuse_unsupported(
    route: Route, capacity: Mapping[str, LocalCapacity], facts: RequestFacts, sensitive: bool
) -> None:
    """Only the local tier may serve this request, and it lacks a feature the request uses."""
    missing = _missing(_local_state(route, capacity), facts)
    if not missing:
        return
    why = ("this request carries sensitive data, which never leaves the node"
           if sensitive else f"model {route.name} is served only locally")
    raise InvalidRequest(
        f"`{missing[0]}` is not supported by the local model of {route.name}, and {why}; "
        f"send the request without `{missing[0]}`",
        param=missing[0], code="unsupported_parameter",
    )


def _fits(target: Target, facts: RequestFacts) -> bool:
    return target.context_length is None or facts.tokens_needed <= target.context_length


def _paid(route: Route, facts: RequestFacts, budget: BudgetView, reason: str) -> Decision:
    if not budget.paid_allowed:
        raise RateLimited(
            "paid-API budget exhausted for this key", code="budget_exhausted",
            retry_after_s=60.0,
        )
    targets = tuple(t for t in route.paid if _fits(t, facts))
    if not targets:
        raise InvalidRequest(  # the request is too large, not the node unavailable
            f"no paid model on route {route.name} has a context window large enough for "
            f"{facts.tokens_needed} tokens",
            param="messages", code="context_length_exceeded",
        )
    return Decision(targets, reason)


def _auto(
    route: Route, facts: RequestFacts, capacity: Mapping[str, LocalCapacity],
    budget: BudgetView,
) -> Decision:
    state = _local_state(route, capacity)
    local_serves = (route.local is not None and state.ready and _fits(route.local, facts)
                    and not _missing(state, facts))
    if facts.dispatch == "api" and budget.paid_allowed and any(
            _fits(t, facts) for t in route.paid):
        return _paid(route, facts, budget, "router_paid")
    spill_reason = _spill_reason(route, state, facts)
    if spill_reason is None and route.local is not None:
        # Local first; the paid chain stays behind it in case the engine fails before the
        # first byte (the service retries nothing once a stream has started).
        paid = route.paid if budget.paid_allowed else ()
        return Decision((route.local, *paid),
                        "router_local" if facts.dispatch == "local" else "local_ok")
    if route.paid and budget.paid_allowed:
        return _paid(route, facts, budget, spill_reason or "local_unavailable")
    if route.on_budget_exhausted == "local" and local_serves and route.local is not None:
        return Decision((route.local,), "budget_exhausted_local")
    if not budget.paid_allowed:
        raise RateLimited(
            "local capacity is saturated and the paid-API budget is exhausted",
            code="budget_exhausted",
            retry_after_s=5.0,
        )
    _refuse_unsupported(route, capacity, facts, sensitive=False)
    return _local_only(route, capacity, sensitive=False)


def _guarded(
    route: Route, capacity: Mapping[str, LocalCapacity], facts: RequestFacts,
    budget: BudgetView, paid_only: bool,
) -> Decision:
    """The spend guard is open: local or nothing, reason `spend_guard` (the paid chain is
    gone from behind local too, so a stream past its local deadline waits instead of
    spilling)."""
    state = _local_state(route, capacity)
    if (route.local is not None and (budget.guard_fallback_local or not paid_only)
            and state.ready and _fits(route.local, facts) and not _missing(state, facts)):
        return Decision((route.local,), "spend_guard")
    raise RateLimited(
        "paid-API spend is over the node's spend guard and no local model can serve this "
        "request; retry after the cool-down",
        code="spend_guard_open", retry_after_s=budget.guard_retry_after_s,
    )


def _spill_reason(route: Route, state: LocalCapacity, facts: RequestFacts) -> str | None:
    if route.local is None or not state.ready:
        return "local_unavailable"
    if _missing(state, facts):
        return "local_unsupported"
    if not _fits(route.local, facts):
        return "local_context_exceeded"
    if state.queue_full:
        return "local_queue_full"
    if state.spill_reason:
        return state.spill_reason
    load = state.routes.get(route.name)
    if load is None:
        return None
    if load.spill_reason:
        return load.spill_reason
    if load.admit_limit is not None and state.inflight >= load.admit_limit:
        return load.limit_reason
    return None
