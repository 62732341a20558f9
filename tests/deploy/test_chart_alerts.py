"""The chart's spend-guard and budget alerts: rendered, wired to the node's config, and firing
at the thresholds on the gauges the gateway really exports.

No promtool here: each new rule's expression is a single selector compared with a number, so
the test reads its matchers and evaluates it on the gateway's own /metrics exposition after
driving the spend watch (spend_watch.py) past each threshold."""

from __future__ import annotations

import operator
import re
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spillgate.spend_watch import SpendWatch
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.tenancy.spend_guard import GuardConfig, Limits
from tests.deploy.render import MONITORING, render, values_of
from tests.deploy.support import CHART
from tests.deploy.test_chart_render import find, node_settings

NEW_ALERTS = ("SpillgateSpendGuardOpen", "SpillgateKeySpendGuardOpen",
              "SpillgateBudgetSoftThreshold", "SpillgateBudgetExhausted")
# Labels Prometheus adds from the scrape target, not the gateway: not in the exposition.
TARGET_LABELS = {"namespace", "job"}
_EXPR = re.compile(r"^(?:max(?: by \([^)]*\))?\s*\()?(\w+)\{([^}]*)\}\)?\s*(==|>)\s*([\d.]+)$")
_MATCHER = re.compile(r'\s*(\w+)\s*(!=|=)\s*"([^"]*)"\s*')


def _rules(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    doc = find(render(values, MONITORING), "PrometheusRule", "")
    return {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}


def _monitoring_values() -> dict[str, Any]:
    values = values_of(CHART / "ci" / "gpu-values.yaml")
    values.setdefault("metrics", {})["prometheusRule"] = {"enabled": True, "budgetFor": "2m"}
    return values


def _fires(expr: str, exposition: str) -> bool:
    """Evaluate `[max[ by (...)](]metric{matchers}[)] op number` on one scrape."""
    match = _EXPR.match(" ".join(expr.split()))
    assert match, f"unexpected expression shape: {expr}"
    name, matchers, op, bound = match.groups()
    wanted = [m for m in _MATCHER.findall(matchers) if m[0] not in TARGET_LABELS]
    compare = {"==": operator.eq, ">": operator.gt}[op]
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name != name:
                continue
            if all((sample.labels.get(k) == v) == (o == "=") for k, o, v in wanted) and \
                    compare(sample.value, float(bound)):
                return True
    return False


def test_rules_render_with_the_configured_durations() -> None:
    rules = _rules(_monitoring_values())
    assert set(NEW_ALERTS) <= set(rules)
    assert rules["SpillgateBudgetSoftThreshold"]["for"] == "2m"
    assert rules["SpillgateSpendGuardOpen"]["for"] == "0m"
    assert rules["SpillgateBudgetExhausted"]["labels"]["severity"] == "critical"


def test_default_values_give_the_node_a_valid_guard_and_alert_config() -> None:
    settings = node_settings(render(values_of(CHART / "ci" / "gpu-values.yaml")))
    assert settings.spend_guard.window_s == 300
    assert settings.alerts.budget_thresholds == [0.8, 1.0]
    assert settings.alert_webhook_url() is None


def test_webhook_url_comes_from_the_secret() -> None:
    values = values_of(CHART / "ci" / "gpu-values.yaml")
    values.setdefault("config", {})["alerts"] = {"webhook_url_env": "SPILLGATE_ALERT_URL"}
    docs = render(values)
    env = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]
    hook = next(e for e in env if e["name"] == "SPILLGATE_ALERT_URL")
    assert hook["valueFrom"]["secretKeyRef"]["key"] == "SPILLGATE_ALERT_URL"


@pytest.mark.parametrize(("remaining", "firing"), [
    ("5", set()),  # 50% used: nothing
    ("2", {"SpillgateBudgetSoftThreshold"}),  # 80% used: the soft alert
    ("0", {"SpillgateBudgetSoftThreshold", "SpillgateBudgetExhausted"}),  # all used
])
def test_budget_alerts_fire_at_the_thresholds(remaining: str, firing: set[str]) -> None:
    rules = _rules(_monitoring_values())
    metrics = GatewayMetrics()
    watch = SpendWatch(GuardConfig(window_s=60), [0.8, 1.0], metrics)
    watch.budget_used("k1", {"day": Decimal(10), "month": None},
                      {"day": Decimal(remaining), "month": None})
    page = metrics.render().decode()
    fired = {name for name in NEW_ALERTS if _fires(rules[name]["expr"], page)}
    assert fired == firing


def test_guard_alerts_fire_while_a_guard_is_open() -> None:
    rules = _rules(_monitoring_values())
    metrics = GatewayMetrics()
    config = GuardConfig(window_s=60, node=Limits(limit_usd=Decimal(1)),
                         per_key=Limits(limit_usd=Decimal("0.5")))
    watch = SpendWatch(config, [], metrics)
    page = metrics.render().decode()
    assert not any(_fires(rules[n]["expr"], page) for n in NEW_ALERTS)
    watch.paid_settled("k1", Decimal("0.6"))  # the key's guard only
    page = metrics.render().decode()
    assert {n for n in NEW_ALERTS if _fires(rules[n]["expr"], page)} == {
        "SpillgateKeySpendGuardOpen"}
    watch.paid_settled("k2", Decimal("0.6"))  # $1.20 node-wide
    page = metrics.render().decode()
    assert {n for n in NEW_ALERTS if _fires(rules[n]["expr"], page)} == {
        "SpillgateKeySpendGuardOpen", "SpillgateSpendGuardOpen"}
