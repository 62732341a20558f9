"""Features the local engine lacks: `auto` spills them (`local_unsupported`), a sensitive or
local-only request gets a 400 naming the field; and which request fields ask for what."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.errors import InvalidRequest, RateLimited
from spillgate.routing.features import KNOWN, requested
from spillgate.routing.router import BudgetView, LocalCapacity, RequestFacts, decide
from tests.unit.test_router import AUTO, BROKE, LOCAL_ROUTE

NO_TOOLS = {"local-cpu": LocalCapacity(ready=True, unsupported=frozenset({"tools", "n"}))}
TOOLS = RequestFacts(sensitive=False, features=frozenset({"tools"}))
JSON_MODE = RequestFacts(sensitive=False, features=frozenset({"response_format"}))


def test_unsupported_feature_spills_auto_traffic() -> None:
    decision = decide(TOOLS, NO_TOOLS, BudgetView(), AUTO)
    assert [t.tier for t in decision.targets] == ["api", "api"]
    assert decision.reason == "local_unsupported"


def test_supported_feature_stays_local() -> None:
    decision = decide(JSON_MODE, NO_TOOLS, BudgetView(), AUTO)
    assert decision.reason == "local_ok" and decision.first.tier == "local"


def test_sensitive_request_gets_a_400_naming_the_field() -> None:
    facts = RequestFacts(sensitive=True, features=frozenset({"tools"}))
    with pytest.raises(InvalidRequest) as caught:
        decide(facts, NO_TOOLS, BudgetView(), AUTO)
    assert caught.value.param == "tools" and caught.value.status == 400
    assert "sensitive" in str(caught.value)


def test_local_only_route_gets_a_400_naming_the_field() -> None:
    facts = RequestFacts(sensitive=False, features=frozenset({"n", "response_format"}))
    with pytest.raises(InvalidRequest) as caught:
        decide(facts, NO_TOOLS, BudgetView(), LOCAL_ROUTE)
    assert caught.value.param == "n"


def test_no_budget_is_still_a_429_not_a_silent_local_failure() -> None:
    with pytest.raises(RateLimited):
        decide(TOOLS, NO_TOOLS, BROKE, AUTO)


@given(st.frozensets(st.sampled_from(sorted(KNOWN))), st.frozensets(st.sampled_from(sorted(KNOWN))),
       st.booleans())
def test_local_never_gets_what_it_declared_unsupported(
    features: frozenset[str], unsupported: frozenset[str], sensitive: bool,
) -> None:
    capacity = {"local-cpu": LocalCapacity(ready=True, unsupported=unsupported)}
    facts = RequestFacts(sensitive=sensitive, features=features)
    try:
        decision = decide(facts, capacity, BudgetView(), AUTO)
    except InvalidRequest as refused:
        assert sensitive and refused.param in features & unsupported
        return
    local_first = decision.first.tier == "local"
    assert local_first == (not (features & unsupported)) or sensitive
    if features & unsupported:
        assert decision.reason == "local_unsupported"


@pytest.mark.parametrize(
    ("body", "features"),
    [
        ({"messages": []}, set()),
        ({"tools": [{"type": "function"}]}, {"tools"}),
        ({"tools": []}, set()),
        ({"functions": [{"name": "f"}]}, {"tools"}),
        ({"response_format": {"type": "text"}}, set()),
        ({"response_format": {"type": "json_object"}}, {"response_format"}),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, {"response_format"}),
        ({"logprobs": True, "n": 3}, {"logprobs", "n"}),
        ({"logprobs": False, "n": 1}, set()),
        ({"logprobs": 0}, {"logprobs"}),  # legacy completions: 0 still asks for logprobs
    ],
)
def test_requested_features(body: dict[str, object], features: set[str]) -> None:
    assert requested(body) == features
