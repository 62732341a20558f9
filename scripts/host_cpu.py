"""The whole machine's CPU time from /proc/stat: what a benchmark's own processes cannot see.

On a VM, time the hypervisor gives to other guests ("steal") and idle cores decide what a
load test can show; scripts/bench_gateway.py and scripts/core_budget.py record both beside
their figures.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def machine_times() -> dict[str, float]:
    """Seconds of all CPUs since boot: busy (everything but idle, iowait and steal), idle
    (with iowait) and steal, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return {"busy": (user + nice + system + irq + softirq) * TICK_S,
            "idle": (idle + iowait) * TICK_S, "steal": steal * TICK_S}


def cores(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Average cores busy, idle and stolen between two `machine_times()` readings."""
    return {f"cores_{k}": (after[k] - before[k]) / wall_s for k in ("busy", "idle", "steal")}
