"""The routing decision, table-driven, plus properties that must hold for every input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.errors import InvalidRequest, PermissionDenied, RateLimited, ServiceUnavailable
from spillgate.routing.router import (
    BudgetView,
    LocalCapacity,
    RequestFacts,
    Route,
    RouteLoad,
    Target,
    decide,
)

LOCAL = Target("local-cpu", "smollm2", "local", 2048)
PAID = Target("openai", "gpt-4o-mini", "api", 128000)
FALLBACK = Target("anthropic", "claude-3-5-haiku-latest", "api", 200000)
AUTO = Route("auto", "auto", LOCAL, (PAID, FALLBACK))
LOCAL_ROUTE = Route("local", "local", LOCAL, ())
API_ROUTE = Route("openai/gpt-4o-mini", "api", None, (PAID,))

UP = {"local-cpu": LocalCapacity(ready=True)}
DOWN = {"local-cpu": LocalCapacity(ready=False)}
FULL = {"local-cpu": LocalCapacity(ready=True, queue_full=True)}
OVER = {"local-cpu": LocalCapacity(ready=True, spill_reason="overflow_queue")}
AT_LIMIT = {"local-cpu": LocalCapacity(ready=True, inflight=6,
                                       routes={"auto": RouteLoad(admit_limit=6)})}
BELOW_LIMIT = {"local-cpu": LocalCapacity(ready=True, inflight=5,
                                          routes={"auto": RouteLoad(admit_limit=6)})}
KV_FULL = {"local-cpu": LocalCapacity(ready=True, routes={
    "auto": RouteLoad(spill_reason="overflow_kv_cache", admit_limit=100)})}
BLIND = {"local-cpu": LocalCapacity(ready=True, inflight=4, routes={
    "auto": RouteLoad(admit_limit=4, limit_reason="telemetry_unknown")})}
PLAIN = RequestFacts(sensitive=False)
SECRET = RequestFacts(sensitive=True)
BROKE = BudgetView(paid_allowed=False)


@pytest.mark.parametrize(
    ("route", "facts", "capacity", "budget", "backends", "reason"),
    [
        (AUTO, PLAIN, UP, BudgetView(), ["local-cpu", "openai", "anthropic"], "local_ok"),
        (AUTO, PLAIN, DOWN, BudgetView(), ["openai", "anthropic"], "local_unavailable"),
        (AUTO, PLAIN, FULL, BudgetView(), ["openai", "anthropic"], "local_queue_full"),
        (AUTO, PLAIN, OVER, BudgetView(), ["openai", "anthropic"], "overflow_queue"),
        (AUTO, PLAIN, OVER, BROKE, ["local-cpu"], "budget_exhausted_local"),
        (AUTO, PLAIN, AT_LIMIT, BudgetView(), ["openai", "anthropic"], "overflow_queue"),
        (AUTO, PLAIN, BELOW_LIMIT, BudgetView(), ["local-cpu", "openai", "anthropic"],
         "local_ok"),
        (AUTO, PLAIN, KV_FULL, BudgetView(), ["openai", "anthropic"], "overflow_kv_cache"),
        (AUTO, PLAIN, BLIND, BudgetView(), ["openai", "anthropic"], "telemetry_unknown"),
        (AUTO, SECRET, AT_LIMIT, BudgetView(), ["local-cpu"], "sensitive_local"),
        (LOCAL_ROUTE, PLAIN, AT_LIMIT, BudgetView(), ["local-cpu"], "local_policy"),
        (AUTO, PLAIN, UP, BROKE, ["local-cpu"], "local_ok"),
        (AUTO, SECRET, UP, BudgetView(), ["local-cpu"], "sensitive_local"),
        (AUTO, SECRET, OVER, BudgetView(), ["local-cpu"], "sensitive_local"),
        (LOCAL_ROUTE, PLAIN, UP, BudgetView(), ["local-cpu"], "local_policy"),
        (API_ROUTE, PLAIN, DOWN, BudgetView(), ["openai"], "api_policy"),
        (AUTO, RequestFacts(False, "local"), OVER, BudgetView(), ["local-cpu"], "local_policy"),
        (AUTO, RequestFacts(False, "api"), UP, BudgetView(), ["openai", "anthropic"],
         "pinned_api"),
        (AUTO, RequestFacts(False, tokens_needed=5000), UP, BudgetView(),
         ["openai", "anthropic"], "local_context_exceeded"),
    ],
)
def test_decisions(route: Route, facts: RequestFacts, capacity: dict[str, LocalCapacity],
                   budget: BudgetView, backends: list[str], reason: str) -> None:
    decision = decide(facts, capacity, budget, route)
    assert [t.backend for t in decision.targets] == backends
    assert decision.reason == reason


@pytest.mark.parametrize(
    ("route", "facts", "capacity", "budget", "error", "code"),
    [
        (AUTO, SECRET, DOWN, BudgetView(), ServiceUnavailable, "local_unavailable"),
        (AUTO, RequestFacts(True, "api"), UP, BudgetView(), PermissionDenied, "sensitive_data"),
        (API_ROUTE, SECRET, UP, BudgetView(), PermissionDenied, "sensitive_data"),
        (LOCAL_ROUTE, PLAIN, DOWN, BudgetView(), ServiceUnavailable, "local_unavailable"),
        (API_ROUTE, PLAIN, UP, BROKE, RateLimited, "budget_exhausted"),
        (AUTO, PLAIN, DOWN, BROKE, RateLimited, "budget_exhausted"),
    ],
)
def test_refusals(route: Route, facts: RequestFacts, capacity: dict[str, LocalCapacity],
                  budget: BudgetView, error: type[Exception], code: str) -> None:
    with pytest.raises(error) as caught:
        decide(facts, capacity, budget, route)
    assert getattr(caught.value, "code", None) == code


def test_local_only_route_makes_every_request_sensitive() -> None:
    route = Route("private", "auto", LOCAL, (PAID,), local_only=True)
    decision = decide(PLAIN, OVER, BudgetView(), route)
    assert [t.tier for t in decision.targets] == ["local"]


def test_fallback_skips_models_whose_context_is_too_small() -> None:
    small = Target("openai", "small", "api", 1000)
    route = Route("auto", "auto", LOCAL, (small, FALLBACK))
    decision = decide(RequestFacts(False, tokens_needed=3000), DOWN, BudgetView(), route)
    assert [t.model for t in decision.targets] == ["claude-3-5-haiku-latest"]


capacities = st.builds(LocalCapacity, ready=st.booleans(), queue_full=st.booleans(),
                       spill_reason=st.sampled_from([None, "overflow_queue", "overflow_gpu"]))
routes = st.sampled_from([AUTO, LOCAL_ROUTE, API_ROUTE,
                          Route("p", "auto", LOCAL, (PAID,), local_only=True)])


@given(
    route=routes, capacity=capacities, paid_allowed=st.booleans(),
    pin=st.sampled_from([None, "local", "api"]), tokens=st.integers(0, 300000),
)
def test_sensitive_requests_never_get_a_paid_target(
    route: Route, capacity: LocalCapacity, paid_allowed: bool, pin: str | None, tokens: int
) -> None:
    facts = RequestFacts(True, pin, tokens)  # type: ignore[arg-type]
    try:
        decision = decide(facts, {"local-cpu": capacity}, BudgetView(paid_allowed), route)
    except (ServiceUnavailable, PermissionDenied, RateLimited, InvalidRequest):
        return
    assert all(t.tier == "local" for t in decision.targets)


@given(route=routes, capacity=capacities, tokens=st.integers(0, 300000))
def test_exhausted_budget_never_yields_a_paid_target(
    route: Route, capacity: LocalCapacity, tokens: int
) -> None:
    facts = RequestFacts(False, None, tokens)
    try:
        decision = decide(facts, {"local-cpu": capacity}, BROKE, route)
    except (ServiceUnavailable, PermissionDenied, RateLimited, InvalidRequest):
        return
    assert all(t.tier == "local" for t in decision.targets)
