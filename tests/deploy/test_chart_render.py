"""Render the chart with `helm template` (skipped where no helm binary is installed; set
SPILLGATE_HELM to use another binary) and check what the cluster would receive."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spillgate.engines.catalog import Catalog
from spillgate.routing.routes import build_routes
from spillgate.settings import Settings
from tests.deploy.support import CHART, CI_VALUES, REPO

HELM = os.environ.get("SPILLGATE_HELM") or shutil.which("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary (CI renders the chart)")
MONITORING = ["--api-versions", "monitoring.coreos.com/v1"]


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, "template", "sg", str(CHART), "--namespace", "llm", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def render(*args: str) -> list[dict[str, Any]]:
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))


@pytest.mark.parametrize("override", [None, *CI_VALUES], ids=lambda p: p.name if p else "default")
def test_rendered_config_map_is_a_valid_node_config(override: Path | None) -> None:
    docs = render(*(["-f", str(override)] if override else []), *MONITORING)
    config = yaml.safe_load(find(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    settings = Settings(**(config | {"models_dir": str(REPO / "models")}))
    build_routes(settings, Catalog.load(REPO / "models" / "catalog.yaml"))
    gateway = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    env = {e["name"] for e in gateway["containers"][0]["env"]}
    assert settings.server.api_keys_env in env
    assert {p.api_key_env for p in settings.providers if p.api_key_env} <= env


def test_engine_pod_is_scheduled_on_gpu_nodes_and_gateway_is_locked_down() -> None:
    docs = render()
    engine = find(docs, "Deployment", "-engine")["spec"]["template"]["spec"]
    limits = engine["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in engine["tolerations"])
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in engine["volumes"])
    gateway = find(docs, "Deployment", "-gateway")["spec"]["template"]
    assert "checksum/config" in gateway["metadata"]["annotations"]
    security = gateway["spec"]["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert gateway["spec"]["securityContext"]["runAsNonRoot"]


def test_several_replicas_with_sqlite_fail_with_a_clear_message() -> None:
    result = helm_template("--set", "gateway.replicas=2")
    assert result.returncode != 0 and "PostgreSQL" in result.stderr
    result = helm_template("--set", "gateway.autoscaling.enabled=true")
    assert result.returncode != 0 and "PostgreSQL" in result.stderr
    render("--set", "gateway.replicas=2", "--set", "ledger.existingSecret=pg")


def test_monitoring_objects_need_the_operator_api() -> None:
    gpu = CHART / "ci" / "gpu-values.yaml"
    without = {d["kind"] for d in render("-f", str(gpu))}
    with_api = {d["kind"] for d in render("-f", str(gpu), *MONITORING)}
    assert "ServiceMonitor" not in without and "PrometheusRule" not in without
    assert {"ServiceMonitor", "PrometheusRule"} <= with_api
