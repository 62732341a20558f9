"""Stage rules as a table: what each condition matches, the order, and config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.catalog import Catalog
from spillgate.errors import ConfigError
from spillgate.routing.routes import build_routes
from spillgate.routing.stage_rules import RuleFacts, StageRule, build_rules, first_match
from spillgate.settings import RuleSettings, Settings, load_settings
from spillgate.types import Tier

BASE = RuleFacts(model="auto", endpoint="chat/completions", key_id="k1",
                 tags={"stage": "synthesis", "project": "atlas"}, prompt_tokens=500,
                 tools=False)
BOTH: dict[Tier, bool] = {"local": True, "api": True}


def rule(name: str = "r", tier: str | None = "api", model: str | None = None,
         **match: Any) -> StageRule:
    return StageRule.from_settings(RuleSettings.model_validate(
        {"name": name, "match": match, "tier": tier, "model": model}))


@pytest.mark.parametrize(("match", "hits"), [
    ({}, True),
    ({"tags": {"stage": "synthesis"}}, True),
    ({"tags": {"stage": "synthesis", "project": "atlas"}}, True),
    ({"tags": {"stage": "extraction"}}, False),
    ({"tags": {"team": "x"}}, False),
    ({"key_ids": ["k1", "k2"]}, True),
    ({"key_ids": ["k2"]}, False),
    ({"endpoints": ["completions"]}, False),
    ({"endpoints": ["chat/completions", "completions"]}, True),
    ({"models": ["auto"]}, True),
    ({"models": ["local"]}, False),
    ({"min_prompt_tokens": 500}, True),
    ({"min_prompt_tokens": 501}, False),
    ({"max_prompt_tokens": 500}, True),
    ({"max_prompt_tokens": 499}, False),
    ({"tools": False}, True),
    ({"tools": True}, False),
    ({"tags": {"stage": "synthesis"}, "key_ids": ["k2"]}, False),  # every condition must hold
])
def test_each_condition(match: dict[str, Any], hits: bool) -> None:
    assert rule(**match).matches(BASE) is hits


def test_the_first_matching_rule_wins_and_unhonourable_tiers_are_skipped() -> None:
    rules = [rule("never", tags={"stage": "other"}), rule("paid", "api"),
             rule("local", "local")]
    assert first_match(rules, BASE, BOTH) is rules[1]
    found = first_match(rules, BASE, {"local": True, "api": False})  # a local-only route
    assert found is rules[2]
    assert first_match(rules, BASE, {"local": False, "api": False}) is None
    pin = rule("to-paid", tier=None, model="paid")
    assert first_match([pin], BASE, {"local": False, "api": False}) is pin
    assert pin.reason == "rule:to-paid"


@given(tokens=st.integers(0, 10**6), low=st.integers(0, 10**6), span=st.integers(0, 10**6))
def test_prompt_size_bounds_are_inclusive(tokens: int, low: int, span: int) -> None:
    facts = RuleFacts("auto", "completions", None, {}, tokens, False)
    within = rule(min_prompt_tokens=low, max_prompt_tokens=low + span).matches(facts)
    assert within is (low <= tokens <= low + span)


@pytest.mark.parametrize(("rule_body", "message"), [
    ({"name": "r", "tier": "api", "model": "paid"}, "exactly one of `tier` and `model`"),
    ({"name": "r"}, "exactly one of `tier` and `model`"),
    ({"name": "has space", "tier": "api"}, "name"),
    ({"name": "n" * 25, "tier": "api"}, "name"),  # the reason must fit the ledger column
    ({"name": "r", "tier": "gpu"}, "tier"),
    ({"name": "r", "tier": "api", "match": {"min_prompt_tokens": 9, "max_prompt_tokens": 3}},
     "min_prompt_tokens exceeds max_prompt_tokens"),
    ({"name": "r", "tier": "api", "match": {"stage": "x"}}, "match.stage"),
    ({"name": "r", "tier": "api", "match": {"endpoints": ["images"]}}, "endpoints"),
])
def test_bad_rules_are_refused_with_the_field_named(rule_body: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match="rules") as caught:
        load_settings(overrides={"rules": [rule_body]})
    assert message in str(caught.value)


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate rule names"):
        load_settings(overrides={"rules": [{"name": "r", "tier": "api"},
                                           {"name": "r", "tier": "local"}]})


def test_a_rule_naming_an_unknown_model_is_refused_at_start(tmp_path: Path) -> None:
    settings = Settings.model_validate({"rules": [
        {"name": "r", "model": "gpt-17"}], "ledger": {"dsn": "sqlite+aiosqlite:///x.db"}})
    routes = build_routes(settings, Catalog.load(settings.models_dir / "catalog.yaml"))
    with pytest.raises(ConfigError, match=r"rules\.r: no route or model is named 'gpt-17'"):
        build_rules(settings.rules, routes)
    ok = Settings.model_validate({"rules": [{"name": "r", "model": "smollm2",
                                             "match": {"models": ["auto"]}}]})
    assert [r.name for r in build_rules(ok.rules, routes)] == ["r"]


@pytest.mark.parametrize(("route", "message"), [
    ({"policy": "local", "local": "smollm2", "router": "r.json", "paid_share": 0.3},
     "`router` needs policy auto"),
    ({"policy": "auto", "local": "smollm2", "paid": "p/m", "router": "r.json"},
     "exactly one of `paid_share` and `threshold`"),
    ({"policy": "auto", "local": "smollm2", "paid": "p/m", "router": "r.json",
      "paid_share": 0.3, "threshold": 0.5}, "exactly one of `paid_share` and `threshold`"),
    ({"policy": "auto", "local": "smollm2", "paid": "p/m", "paid_share": 0.3},
     "need `router`"),
    ({"policy": "auto", "local": "smollm2", "paid": "p/m", "router": "r.json",
      "paid_share": 1.5}, "paid_share"),
])
def test_router_settings_are_validated(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"routes": [{"name": "smart", **route}]})
    assert message in str(caught.value)
