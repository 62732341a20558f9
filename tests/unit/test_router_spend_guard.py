"""The router with the spend guard open: auto stays local, paid-only answers 429
spend_guard_open unless the operator chose `fallback: local`; never a paid target."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.errors import ApiError, RateLimited
from spillgate.routing.router import BudgetView, LocalCapacity, RequestFacts, Route, decide
from tests.unit.test_router import (
    API_ROUTE,
    AUTO,
    DOWN,
    FULL,
    KV_FULL,
    LOCAL,
    OVER,
    PAID,
    PLAIN,
    SECRET,
    UP,
)

OPEN = BudgetView(guard_open=True, guard_retry_after_s=42.0)
OPEN_LOCAL = BudgetView(guard_open=True, guard_fallback_local=True)
API_WITH_LOCAL = Route("premium", "api", LOCAL, (PAID,))
PINNED = RequestFacts(sensitive=False, tier_pin="api")


@pytest.mark.parametrize(
    ("route", "facts", "capacity", "budget", "reason"),
    [
        (AUTO, PLAIN, OVER, OPEN, "spend_guard"),  # would have spilled: kept local
        (AUTO, PLAIN, FULL, OPEN, "spend_guard"),
        (AUTO, PLAIN, KV_FULL, OPEN, "spend_guard"),
        (AUTO, PLAIN, UP, OPEN, "spend_guard"),  # local had room, but no paid chain behind
        (AUTO, SECRET, OVER, OPEN, "sensitive_local"),
        (API_WITH_LOCAL, PLAIN, UP, OPEN_LOCAL, "spend_guard"),
        (AUTO, PINNED, UP, OPEN_LOCAL, "spend_guard"),
    ],
)
def test_open_guard_keeps_traffic_local(
    route: Route, facts: RequestFacts, capacity: dict[str, LocalCapacity], budget: BudgetView,
    reason: str,
) -> None:
    decision = decide(facts, capacity, budget, route)
    assert [t.backend for t in decision.targets] == ["local-cpu"]
    assert decision.reason == reason


@pytest.mark.parametrize(
    ("route", "facts", "capacity", "budget"),
    [
        (API_ROUTE, PLAIN, UP, OPEN),  # paid-only, no local model
        (API_ROUTE, PLAIN, UP, OPEN_LOCAL),  # fallback local, but the route names none
        (API_WITH_LOCAL, PLAIN, UP, OPEN),  # paid-only and the operator said reject
        (AUTO, PINNED, UP, OPEN),
        (AUTO, PLAIN, DOWN, OPEN),  # local cannot serve and paid is held back
    ],
)
def test_open_guard_refuses_what_only_a_paid_api_could_serve(
    route: Route, facts: RequestFacts, capacity: dict[str, LocalCapacity], budget: BudgetView,
) -> None:
    with pytest.raises(RateLimited) as refused:
        decide(facts, capacity, budget, route)
    assert refused.value.status == 429
    assert refused.value.code == "spend_guard_open"
    assert refused.value.body()["error"]["code"] == "spend_guard_open"


def test_refusal_carries_the_remaining_cool_down() -> None:
    with pytest.raises(RateLimited) as refused:
        decide(PLAIN, UP, OPEN, API_ROUTE)
    assert refused.value.retry_after_s == 42.0  # web.py turns it into Retry-After


CAPACITIES = [UP, DOWN, FULL, OVER, KV_FULL]


@given(route=st.sampled_from([AUTO, API_ROUTE, API_WITH_LOCAL]),
       capacity=st.sampled_from(CAPACITIES), sensitive=st.booleans(),
       pin=st.sampled_from([None, "api", "local"]), fallback_local=st.booleans(),
       paid_allowed=st.booleans())
def test_open_guard_never_yields_a_paid_target(
    route: Route, capacity: dict[str, LocalCapacity], sensitive: bool, pin: str | None,
    fallback_local: bool, paid_allowed: bool,
) -> None:
    facts = RequestFacts(sensitive=sensitive, tier_pin=pin)  # type: ignore[arg-type]
    budget = BudgetView(paid_allowed, guard_open=True, guard_fallback_local=fallback_local)
    try:
        decision = decide(facts, capacity, budget, route)
    except ApiError:
        return
    assert all(t.tier == "local" for t in decision.targets)
