"""`spillgate bench` against the real llama.cpp engine (attached): the printed per-unit figure
is the tokens it reports divided by the time and the units."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, Proc, write_config

pytestmark = pytest.mark.integration


def test_bench_prints_tokens_per_second_per_unit(engine: Proc, tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.yaml", {
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [engine.base_url],
                   "max_batch": 2}],
        "cost": {"hardware_profile": "cpu-node", "units": 2},
    })
    done = subprocess.run(
        [sys.executable, "-m", "spillgate", "bench", "--config", str(config),
         "--duration", "2", "--max-tokens", "8"],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    summary = re.search(r"(\d+) requests in ([\d.]+) s, (\d+) prompt \+ (\d+) completion",
                        done.stdout)
    figure = re.search(r"^tokens_per_second: (\d+)$", done.stdout, re.MULTILINE)
    assert summary and figure, done.stdout
    requests, seconds, prompt, completion = (float(g) for g in summary.groups())
    assert requests >= 2 and completion <= 8 * requests
    # the printed seconds are rounded to 0.1 s: allow for that
    low, high = (prompt + completion) / (seconds + 0.05) / 2, (prompt + completion) / (
        seconds - 0.05) / 2
    assert low - 0.5 <= int(figure.group(1)) <= high + 0.5
