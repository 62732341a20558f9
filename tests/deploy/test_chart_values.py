"""values.yaml and the ci values files: schema-valid, commented, referenced correctly."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.support import (
    CHART,
    CI_VALUES,
    REPO,
    TEMPLATES,
    YAMLLINT_CONFIG,
    chart_values,
    load_yaml,
    template_value_refs,
    values_paths,
    venv_tool,
)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
YAMLLINT = venv_tool("yamllint")
KEY_LINE = re.compile(r"^\s*(- )?[A-Za-z0-9_.\"'/-]+:(\s|$)")


def validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


def test_ci_values_files_exist() -> None:
    assert len(CI_VALUES) >= 3


def test_default_values_match_the_schema() -> None:
    validator().validate(chart_values())


@pytest.mark.parametrize("override", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_match_the_schema(override: Path) -> None:
    validator().validate(chart_values(override))


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("gateway", "replicas"), 0),
        (("gateway", "port"), 70000),
        (("image", "pullPolicy"), "Sometimes"),
        (("image", "digest"), "latest"),
        (("engine", "gpus"), 0),
        (("gateway", "typo"), 1),
        (("secrets", "dev", "values"), {"not-an-env-name": "x"}),
        (("metrics", "prometheusRule", "spillRatioThreshold"), 2),
    ],
)
def test_schema_rejects_bad_values(path: tuple[str, ...], bad: Any) -> None:
    values = chart_values()
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert not validator().is_valid(values)


def test_every_values_path_used_in_templates_exists() -> None:
    known = values_paths(chart_values())
    refs = template_value_refs()
    assert refs, "no .Values references found: the regex is broken"
    missing = {".".join(p): files for p, files in refs.items() if p not in known}
    assert not missing, f"templates use values that values.yaml lacks: {missing}"


def test_templates_have_balanced_blocks() -> None:
    """Each if/range/with/define has its end (helm would refuse to parse the chart)."""
    action = re.compile(r"\{\{-?\s*(if|range|with|define|block|end)\b")
    for path in sorted(TEMPLATES.iterdir()):
        depth = 0
        for match in action.finditer(path.read_text()):
            depth += -1 if match.group(1) == "end" else 1
            assert depth >= 0, f"{path.name}: `end` without an opening block"
        assert depth == 0, f"{path.name}: {depth} unclosed block(s)"


def _key_lines(text: str) -> list[tuple[int, str]]:
    """Lines that hold a mapping key, skipping block scalars."""
    keys = []
    block_indent: int | None = None
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue
            block_indent = None
        if KEY_LINE.match(line):
            keys.append((number, line))
            if re.search(r":\s*[|>][-+]?\s*(#.*)?$", line):
                block_indent = indent
    return keys


def uncommented_keys(text: str) -> list[str]:
    """Key lines neither preceded by a `#` comment line nor ending with a comment."""
    lines = text.splitlines()
    bare = []
    for number, line in _key_lines(text):
        previous = next((p.strip() for p in reversed(lines[: number - 1]) if p.strip()), "")
        if not previous.startswith("#") and " #" not in line:
            bare.append(f"{number}: {line.strip()}")
    return bare


def test_every_values_key_has_a_comment() -> None:
    bare = uncommented_keys((CHART / "values.yaml").read_text())
    assert not bare, "keys without a comment:\n" + "\n".join(bare)


def test_comment_check_reports_bare_keys_only() -> None:
    text = "# doc\nfirst: 1\nsecond: 2  # inline\nthird:\n  - name: x\nblock: |\n  a: 1\n"
    assert uncommented_keys(text) == ["4: third:", "5: - name: x", "6: block: |"]


@pytest.mark.skipif(YAMLLINT is None, reason="yamllint absent (pip install yamllint)")
def test_yamllint_on_chart_values_and_workflows() -> None:
    assert YAMLLINT is not None
    targets = [CHART / "values.yaml", CHART / "Chart.yaml", *CI_VALUES,
               *sorted((REPO / ".github" / "workflows").glob("*.yml"))]
    result = subprocess.run(
        [YAMLLINT, "--strict", "-c", str(YAMLLINT_CONFIG), *map(str, targets)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["name"] == "spillgate"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


def test_dashboard_is_shipped_and_valid_json() -> None:
    dashboard = json.loads((CHART / "dashboards" / "spillgate.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("cost", "1m tokens", "spill", "gpu utilization", "gpu power", "queue",
                  "time to first token"):
        assert topic in titles, topic
    assert 'Files.Get "dashboards/spillgate.json"' in (
        TEMPLATES / "dashboard-configmap.yaml").read_text()
