"""Render the chart with Helm's Go SDK (no helm binary needed) for the defaults and every ci
values file, validate every object against the Kubernetes schemas, and check what the pods
would run: the engine's arguments through `spillgate engine vllm --dry-run`, the gateway's node
config through the node's own Settings."""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from spillgate.backends.registry import slot_count
from spillgate.catalog import Catalog
from spillgate.routing.routes import build_routes
from spillgate.settings import Settings
from tests.deploy.render import (
    CRD_KINDS,
    KUBE_VERSIONS,
    MONITORING,
    NAMESPACE,
    RELEASE,
    RenderError,
    find,
    render,
    validate,
    values_of,
)
from tests.deploy.support import CHART, CI_VALUES, REPO, chart_values

CASES = [None, *CI_VALUES]
IDS = [p.name if p else "default" for p in CASES]
CATALOG = Catalog.load(REPO / "models" / "catalog.yaml")


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request: pytest.FixtureRequest) -> tuple[Path | None, list[dict[str, Any]]]:
    override: Path | None = request.param
    return override, render(values_of(override), MONITORING)


def node_settings(docs: list[dict[str, Any]]) -> Settings:
    config = yaml.safe_load(find(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    # The image's /app/models is the repository's models/ here.
    return Settings(**(config | {"models_dir": str(REPO / "models")}))


def engine_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(docs, "Deployment", "-engine")["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def dry_run(args: list[str]) -> list[str]:
    """What the engine container would exec: its args through the real CLI, in dry-run mode."""
    assert args[:2] == ["engine", "vllm"]
    out = subprocess.run([sys.executable, "-m", "spillgate", *args, "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
                         env={"PATH": "/usr/bin:/bin"})  # no KUBERNETES_* hint: args must say it
    assert out.returncode == 0, out.stderr
    return shlex.split(out.stdout)


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_every_object_validates_strictly(case: tuple[Path | None, list[dict[str, Any]]]) -> None:
    _, docs = case
    skipped = set()
    for version in KUBE_VERSIONS:
        for doc in docs:
            if not validate(doc, version):
                skipped.add((doc["apiVersion"], doc["kind"]))
    assert skipped <= CRD_KINDS  # only the Prometheus Operator's custom resources go unchecked


def test_node_config_is_valid_and_names_its_secrets(
    case: tuple[Path | None, list[dict[str, Any]]],
) -> None:
    _, docs = case
    settings = node_settings(docs)
    build_routes(settings, CATALOG)
    gateway = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    env = {e["name"] for e in gateway["containers"][0]["env"]}
    assert settings.server.api_keys_env in env
    assert {p.api_key_env for p in settings.providers if p.api_key_env} <= env


def test_engine_args_parse_and_bind_beyond_loopback(
    case: tuple[Path | None, list[dict[str, Any]]],
) -> None:
    override, docs = case
    engine_values = chart_values(override)["engine"]
    if not engine_values["enabled"]:
        assert not [d for d in docs if d["metadata"]["name"].endswith("-engine")]
        return
    container = engine_container(docs)
    argv = dry_run(container["args"])
    assert argv[:2] == ["vllm", "serve"]
    assert not ipaddress.ip_address(option(argv, "--host")).is_loopback
    port = int(option(argv, "--port"))
    assert container["ports"][0]["containerPort"] == port and container["ports"][0]["name"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] == container["ports"][0]["name"]
    # extraArgs reach vLLM as written.
    extra = [str(a) for a in engine_values["extraArgs"]]
    joined = " ".join(argv)
    assert " ".join(extra) in joined


def test_gateway_slots_equal_the_engines_max_num_seqs(
    case: tuple[Path | None, list[dict[str, Any]]],
) -> None:
    override, docs = case
    if not chart_values(override)["engine"]["enabled"]:  # no vLLM backend to size
        assert all(b.engine != "vllm" for b in node_settings(docs).local)
        return
    argv = dry_run(engine_container(docs)["args"])
    settings = node_settings(docs)
    backend = next(b for b in settings.local if b.engine == "vllm")
    assert slot_count(backend, CATALOG) == int(option(argv, "--max-num-seqs"))


def test_engine_service_is_headless_and_the_gateway_resolves_it(
    case: tuple[Path | None, list[dict[str, Any]]],
) -> None:
    override, docs = case
    if not chart_values(override)["engine"]["enabled"]:
        assert not [d for d in docs if d["kind"] == "Service" and "-engine" in
                    d["metadata"]["name"]]
        return
    service = find(docs, "Service", "-engine")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = find(docs, "Deployment", "-engine")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    backend = next(b for b in node_settings(docs).local if b.engine == "vllm")
    assert backend.resolve_dns and backend.dns_refresh_s > 0
    url = urlsplit(backend.base_urls[0])
    assert url.hostname == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert url.port == service["spec"]["ports"][0]["port"]


def test_gpu_telemetry_comes_from_the_dcgm_exporter(
    case: tuple[Path | None, list[dict[str, Any]]],
) -> None:
    override, docs = case
    values = chart_values(override)
    if not values["engine"]["enabled"]:  # no GPU: NVML off, no exporter, engine signals only
        assert node_settings(docs).telemetry.dcgm_url is None
        return
    telemetry = node_settings(docs).telemetry
    exporter = values["gpuTelemetry"]["dcgmExporter"]
    assert telemetry.dcgm_url == exporter["url"]
    engine_pod = find(docs, "Deployment", "-engine")["metadata"]["name"]
    assert telemetry.dcgm_pod_prefix == engine_pod + "-" and telemetry.dcgm_namespace == NAMESPACE
    policy = find(docs, "NetworkPolicy", "-gateway")
    assert any(p["port"] == exporter["port"] for rule in policy["spec"]["egress"]
               for p in rule.get("ports", []))


def test_pods_are_scheduled_on_gpu_nodes_and_locked_down() -> None:
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
    for values in ({"gateway": {"replicas": 2}}, {"gateway": {"autoscaling": {"enabled": True}}}):
        with pytest.raises(RenderError, match="PostgreSQL"):
            render(values)
    render({"gateway": {"replicas": 2}, "ledger": {"existingSecret": "pg"}})


def test_every_gateway_pod_books_one_hardware_pool_unless_told_otherwise() -> None:
    # Replicas (or the HPA's pods) serve the same engines: without one shared pool each pod
    # would book the node's hardware again (costing/pool.py).
    replicated = {"gateway": {"replicas": 3}, "ledger": {"existingSecret": "pg"}}
    assert node_settings(render(replicated)).cost.pool == f"{RELEASE}-spillgate"
    own = {**replicated, "config": {"cost": {"pool": "rack-4", "units": 2}}}
    cost = node_settings(render(own)).cost
    assert (cost.pool, cost.units) == ("rack-4", 2)


def test_max_num_seqs_in_extra_args_is_refused() -> None:
    with pytest.raises(RenderError, match=r"engine\.maxNumSeqs"):
        render({"engine": {"extraArgs": ["--max-num-seqs", "64"]}})


def test_disabling_gpu_telemetry_leaves_engine_signals_only() -> None:
    settings = node_settings(render({"gpuTelemetry": {"source": "none"}}))
    assert settings.telemetry.dcgm_url is None and not settings.telemetry.nvml


def test_monitoring_objects_need_the_operator_api() -> None:
    gpu = values_of(CHART / "ci" / "gpu-values.yaml")
    without = {d["kind"] for d in render(gpu)}
    with_api = {d["kind"] for d in render(gpu, MONITORING)}
    assert "ServiceMonitor" not in without and "PrometheusRule" not in without
    assert {"ServiceMonitor", "PrometheusRule"} <= with_api
