"""The learned dispatcher's choice inside the pure routing decision: what it can and
cannot override (sensitivity, pins, capacity, budget, context windows)."""

from __future__ import annotations

import pytest

from spillgate.errors import PermissionDenied
from spillgate.routing.router import BudgetView, LocalCapacity, RequestFacts, decide
from spillgate.types import Tier
from tests.unit.test_router import AUTO, BROKE, OVER, UP

TOO_BIG = 150_000  # beyond the paid model's 128k window, within the fallback's 200k


@pytest.mark.parametrize(("dispatch", "facts", "capacity", "budget", "backends", "reason"), [
    ("api", {}, UP, BudgetView(), ["openai", "anthropic"], "router_paid"),
    ("local", {}, UP, BudgetView(), ["local-cpu", "openai", "anthropic"], "router_local"),
    # Overflow still applies to prompts the router would keep local.
    ("local", {}, OVER, BudgetView(), ["openai", "anthropic"], "overflow_queue"),
    # No paid budget: the router's choice cannot buy a paid call.
    ("api", {}, UP, BROKE, ["local-cpu"], "local_ok"),
    # Sensitivity wins over the router.
    ("api", {"sensitive": True}, UP, BudgetView(), ["local-cpu"], "sensitive_local"),
    # A header or rule pin wins over the router.
    ("api", {"tier_pin": "local"}, UP, BudgetView(), ["local-cpu"], "local_policy"),
    # Only the paid models whose window fits the prompt.
    ("api", {"tokens_needed": TOO_BIG}, UP, BudgetView(), ["anthropic"], "router_paid"),
])
def test_the_dispatch_choice_within_the_decision(
        dispatch: Tier, facts: dict[str, object], capacity: dict[str, LocalCapacity],
        budget: BudgetView, backends: list[str], reason: str) -> None:
    base: dict[str, object] = {"sensitive": False, "dispatch": dispatch}
    decision = decide(RequestFacts(**(base | facts)),  # type: ignore[arg-type]
                      capacity, budget, AUTO)
    assert [t.backend for t in decision.targets] == backends
    assert decision.reason == reason


def test_a_rule_pin_refused_for_sensitive_data_names_the_rule() -> None:
    facts = RequestFacts(sensitive=True, tier_pin="api", pinned_by="rule synthesis")
    with pytest.raises(PermissionDenied, match="rule synthesis: api refused") as caught:
        decide(facts, UP, BudgetView(), AUTO)
    assert caught.value.code == "sensitive_data"
