"""Shared paths and readers for the deployment tests (chart, Dockerfiles, workflows)."""

from __future__ import annotations

import copy
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "spillgate"
TEMPLATES = CHART / "templates"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
DOCKERFILES = [REPO / "Dockerfile.cpu", REPO / "Dockerfile.gpu"]
YAMLLINT_CONFIG = REPO / ".yamllint.yaml"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Helm's value coalescing for maps: `extra` wins, nested maps merge, lists replace."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_values(override: Path | None = None) -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(CHART / "values.yaml")
    return deep_merge(values, load_yaml(override) or {}) if override else values


def venv_tool(name: str) -> str | None:
    """A console script next to this interpreter (the venv), else one on PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.is_file() else shutil.which(name)


def values_paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path of a values mapping (lists are leaves: templates range over them)."""
    paths = {prefix} if prefix else set()
    if isinstance(node, dict):
        for key, value in node.items():
            paths |= values_paths(value, (*prefix, str(key)))
    return paths


VALUES_REF = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def template_value_refs() -> dict[tuple[str, ...], list[str]]:
    """`.Values.a.b` / `$.Values.a.b` paths used in templates -> files that use them."""
    refs: dict[tuple[str, ...], list[str]] = {}
    for path in sorted(TEMPLATES.iterdir()):
        for match in VALUES_REF.finditer(path.read_text()):
            key = tuple(match.group(1).lstrip(".").split("."))
            refs.setdefault(key, []).append(path.name)
    return refs
