"""The chart and the node agree: the ConfigMap's config is a valid node Settings, the engine
model is a vLLM model of the catalog, and every metric the dashboard and alerts query exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from spillgate.catalog import Catalog
from spillgate.routing.routes import build_routes
from spillgate.settings import Settings
from spillgate.telemetry.engine_metrics import VLLM_NAMES
from spillgate.telemetry.metrics import GatewayMetrics
from tests.deploy.support import CHART, CI_VALUES, REPO, TEMPLATES, chart_values

CASES = [None, *CI_VALUES]
CATALOG = Catalog.load(REPO / "models" / "catalog.yaml")


def node_config(values: dict[str, Any]) -> dict[str, Any]:
    """What templates/_helpers.tpl (spillgate.nodeConfig) writes to the ConfigMap."""
    config: dict[str, Any] = json.loads(json.dumps(values["config"]))
    config["server"] = {**config.get("server", {}), "host": "0.0.0.0",
                        "port": values["gateway"]["port"]}
    config["cost"] = {"pool": "sg-spillgate", **config.get("cost", {})}
    engine = values["engine"]
    if engine["enabled"]:
        url = f"http://sg-spillgate-engine.llm.svc:{engine['service']['port']}/v1"
        config["local"] = [*config.get("local", []),
                           {"name": engine["backendName"], "model": engine["model"],
                            "engine": "vllm", "base_urls": [url]}]
    return config


def settings_for(override: Path | None) -> Settings:
    # The models dir inside the image is /app/models; here the repo's copy stands in for it.
    config = node_config(chart_values(override)) | {"models_dir": str(REPO / "models")}
    return Settings(**config)


@pytest.mark.parametrize("override", CASES, ids=lambda p: p.name if p else "values.yaml")
def test_config_block_is_valid_node_settings(override: Path | None) -> None:
    settings = settings_for(override)
    assert settings.server.host == "0.0.0.0" and settings.server.api_keys_env
    # The routes the node derives or reads resolve against the catalog and providers.
    table = build_routes(settings, CATALOG)
    assert table is not None


@pytest.mark.parametrize("override", CASES, ids=lambda p: p.name if p else "values.yaml")
def test_engine_model_is_a_vllm_model_of_the_catalog(override: Path | None) -> None:
    engine = chart_values(override)["engine"]
    if engine["enabled"]:
        assert CATALOG.local_model(engine["model"]).engine == "vllm"


def test_chart_attaches_the_engine_instead_of_supervising_it() -> None:
    settings = settings_for(None)
    engine = next(b for b in settings.local if b.name == chart_values()["engine"]["backendName"])
    assert engine.engine == "vllm" and engine.base_urls  # base_urls set = attach mode


def test_default_ledger_is_sqlite_in_the_writable_var_volume() -> None:
    settings = settings_for(None)
    assert settings.ledger.dsn.startswith("sqlite") and "/app/var/" in settings.ledger.dsn
    assert settings.ledger.dsn_env


def test_schema_lists_exactly_the_node_settings_sections() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["config"]["properties"]) == set(Settings.model_fields)


def _exported_names() -> set[str]:
    """Series names the gateway exports, with the suffixes Prometheus adds."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    names = set()
    for family in GatewayMetrics().registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def _queried_spillgate_names() -> set[str]:
    texts = [(CHART / "dashboards" / "spillgate.json").read_text(),
             (TEMPLATES / "prometheusrule.yaml").read_text()]
    return {m for text in texts for m in re.findall(r"\bspillgate_[a-z_]+", text)}


def test_dashboard_and_alerts_query_only_metrics_the_gateway_exports() -> None:
    queried = _queried_spillgate_names()
    assert {"spillgate_api_spend_usd_total", "spillgate_spill_ratio"} <= queried
    unknown = queried - _exported_names()
    assert not unknown, f"queried but never exported: {sorted(unknown)}"


def test_dashboard_expressions_are_balanced() -> None:
    dashboard = json.loads((CHART / "dashboards" / "spillgate.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for left, right in ("()", "{}", "[]"):
                assert expr.count(left) == expr.count(right), (panel["title"], expr)


def test_kv_cache_panel_queries_every_vllm_name_the_parser_reads() -> None:
    """Dockerfile.gpu pins a vLLM that exports the old name; newer ones export the new one."""
    dashboard = json.loads((CHART / "dashboards" / "spillgate.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
             if "cache_usage_perc" in t["expr"]]
    assert exprs and all(name in exprs[0] for name in VLLM_NAMES.kv_cache)
    assert len(VLLM_NAMES.kv_cache) == 2
