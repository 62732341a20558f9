"""The GPU proof's driver reads the node's own gauges and summarizes stages correctly; the
shell scripts at least parse (they run for real only on the lent GPU machine and in the CPU
rehearsal)."""

from __future__ import annotations

import json
import subprocess
import sys

from prometheus_client import generate_latest

from spillgate.telemetry.metrics import GatewayMetrics
from tests.support import REPO

sys.path.insert(0, str(REPO / "scripts"))
from gpu_proof_drive import dump, node_gauges, summarize


def test_gauges_come_from_the_node_exposition() -> None:
    metrics = GatewayMetrics()
    metrics.gpu_util.labels("0").set(0.9)
    metrics.gpu_util.labels("1").set(0.5)
    metrics.gpu_power.labels("0").set(600.0)
    metrics.gpu_power.labels("1").set(300.0)
    metrics.route_spilling.labels("auto").set(1)
    gauges = node_gauges(generate_latest(metrics.registry).decode())
    assert gauges == {"gpu_util": 0.7, "gpu_power_w": 900.0, "route_spilling": 1.0}


def test_summary_per_stage() -> None:
    decisions = [
        {"stage": 1, "t": 0.5, "backend": "local-gpu", "reason": "local_ok"},
        {"stage": 1, "t": 0.9, "backend": "local-gpu", "reason": "local_ok"},
        {"stage": 8, "t": 2.1, "backend": "openai", "reason": "overflow_gpu"},
        {"stage": 8, "t": 2.2, "backend": "local-gpu", "reason": "local_ok"},
        {"stage": 8, "t": 2.3, "backend": "openai", "reason": "overflow_queue"},
        {"stage": 8, "t": 2.4, "status": None, "error": "ReadTimeout"},
    ]
    samples = [{"t": 0.2, "gpu_util": 0.2, "gpu_power_w": 100.0},
               {"t": 2.0, "gpu_util": 0.96, "gpu_power_w": 500.0},
               {"t": 2.5, "gpu_util": 1.0, "gpu_power_w": 700.0}]
    low, high = summarize([1, 8], decisions, samples, [(0.0, 1.0), (1.5, 3.0)], "local-gpu")
    assert (low["requests"], low["spilled"], low["spill_ratio"]) == (2, 0, 0.0)
    assert low["gpu_util_mean"] == 0.2 and low["nvml_util_mean"] is None
    assert (high["requests"], high["spilled"]) == (4, 2) and high["spill_ratio"] == 0.5
    assert high["reasons"] == {"overflow_gpu": 1, "local_ok": 1, "overflow_queue": 1, None: 1}
    assert high["gpu_util_mean"] == 0.98 and high["gpu_power_w_mean"] == 600.0


def test_shell_scripts_parse() -> None:
    for script in ("gpu_proof.sh", "gpu_proof_prepare.sh"):
        result = subprocess.run(["bash", "-n", str(REPO / "scripts" / script)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_output_is_json_with_one_record_per_line() -> None:
    result = {"machine": {"nvml": False}, "decisions": [{"t": 1.0, "reason": "local_ok"}] * 3,
              "telemetry": []}
    text = dump(result)
    assert json.loads(text) == result
    assert text.count('{"t":1.0,"reason":"local_ok"}') == 3 and len(text.splitlines()) == 11
