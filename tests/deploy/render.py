"""Render the chart with Helm's own Go SDK (helm-python-sdk: libhelm_c through ctypes, no helm
binary) and validate what a cluster would receive with kubernetes-validate.

`helm template sg helm/spillgate -n llm -f VALUES --api-versions monitoring.coreos.com/v1` is
`render(VALUES, api_versions=MONITORING)` here. The Python wrapper's `Chart.render` has no
`api_versions` argument, but the native render options accept the same `api_versions` list
the CLI's flag fills, so the call goes one level down for that option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from helm_python import _native

from tests.deploy.support import CHART

RELEASE, NAMESPACE = "sg", "llm"
MONITORING = ("monitoring.coreos.com/v1",)
# Kubernetes versions every object must validate against: the oldest we support and the newest
# schema the installed kubernetes-validate ships.
KUBE_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate (they come from their operators'
# CRDs, which are not vendored here); every other kind must validate strictly.
CRD_KINDS = frozenset({("monitoring.coreos.com/v1", "ServiceMonitor"),
                       ("monitoring.coreos.com/v1", "PrometheusRule")})

RenderError = helm.HelmRenderError


def values_of(path: Path | None) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text()) if path else {}
    return data or {}


def render_files(values: dict[str, Any] | None = None,
                 api_versions: tuple[str, ...] = ()) -> dict[str, str]:
    """Template path → rendered text, exactly as the Helm SDK renders it."""
    opts = {"name": RELEASE, "namespace": NAMESPACE, "api_versions": list(api_versions)}
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values or {})
        raw = _native.call_string("helm_render", chart._raw(), json.dumps(values or {}),
                                  json.dumps(opts))
    files: dict[str, str] = json.loads(raw)
    return files


def render(values: dict[str, Any] | None = None,
           api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (NOTES.txt left out)."""
    docs: list[dict[str, Any]] = []
    for name, text in sorted(render_files(values, api_versions).items()):
        if name.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def validate(doc: dict[str, Any], kube_version: str) -> bool:
    """Strict schema check of one object; False for a custom resource (no schema here)."""
    if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
        return False
    kubernetes_validate.validate(doc, kube_version, strict=True)
    return True


def find(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))
