"""Drive a running node past saturation and record each spill decision next to the GPU
utilization and power readings of the same moment (scripts/gpu_proof.sh runs it).

    python scripts/gpu_proof_drive.py --node http://127.0.0.1:8000/v1 --out gpu_proof.json \
        [--stages 1,2,4,8,16,32,64] [--stage-s 12] [--max-tokens 64]

Each stage keeps `concurrency` clients busy for `stage-s` seconds sending non-streamed
requests to the `auto` route; every answer's x-spillgate-backend and x-spillgate-route (its
reason) is recorded with its time. Meanwhile the node's own /metrics are read every 0.25 s
(spillgate_gpu_utilization_ratio, spillgate_gpu_power_watts: what the overflow controller
saw) together with an independent NVML reading of this process (None without a GPU). The
load is bounded: loopback only, fixed stages, every request has a timeout. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from spillgate.telemetry.nvml import NvmlReader

PROMPT = "Write a long story about a lighthouse keeper and the sea, in many chapters."


def node_gauges(text: str) -> dict[str, float]:
    """GPU gauges the node exports (summed power, mean utilization over GPUs)."""
    util: list[float] = []
    power: list[float] = []
    spilling = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "spillgate_gpu_utilization_ratio":
                util.append(s.value)
            elif s.name == "spillgate_gpu_power_watts":
                power.append(s.value)
            elif s.name == "spillgate_route_spilling" and s.labels.get("route") == "auto":
                spilling = s.value
    out = {"route_spilling": spilling}
    if util:
        out["gpu_util"] = statistics.fmean(util)
    if power:
        out["gpu_power_w"] = sum(power)
    return out


async def sample_loop(client: httpx.AsyncClient, metrics_url: str, nvml: NvmlReader,
                      t0: float, samples: list[dict[str, Any]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        row: dict[str, Any] = {"t": round(time.monotonic() - t0, 3)}
        try:
            row.update(node_gauges((await client.get(metrics_url)).text))
        except httpx.HTTPError as exc:
            row["error"] = type(exc).__name__
        gpus = await asyncio.to_thread(nvml.read)
        if gpus:
            row["nvml_util"] = statistics.fmean(g.utilization_ratio for g in gpus)
            row["nvml_power_w"] = sum(g.power_watts or 0.0 for g in gpus)
        samples.append(row)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def client_loop(client: httpx.AsyncClient, url: str, body: dict[str, Any], stage: int,
                      deadline: float, t0: float, out: list[dict[str, Any]]) -> None:
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            r = await client.post(url, json=body)
            route = r.headers.get("x-spillgate-route", "")
            out.append({"t": round(started - t0, 3), "stage": stage, "status": r.status_code,
                        "backend": r.headers.get("x-spillgate-backend"),
                        "reason": route.partition("reason=")[2] or None,
                        "latency_s": round(time.monotonic() - started, 3)})
        except httpx.HTTPError as exc:
            out.append({"t": round(started - t0, 3), "stage": stage, "status": None,
                        "error": type(exc).__name__})


def summarize(stages: list[int], decisions: list[dict[str, Any]],
              samples: list[dict[str, Any]], windows: list[tuple[float, float]],
              local: str) -> list[Any]:
    rows = []
    for stage, (start, end) in zip(stages, windows, strict=True):
        mine = [d for d in decisions if d["stage"] == stage]
        during = [s for s in samples if start <= s["t"] <= end]
        spilled = sum(1 for d in mine if d.get("backend") and d["backend"] != local)

        def mean(key: str, rows: list[dict[str, Any]] = during) -> float | None:
            values = [r[key] for r in rows if key in r]
            return round(statistics.fmean(values), 3) if values else None

        rows.append({"concurrency": stage, "requests": len(mine), "spilled": spilled,
                     "spill_ratio": round(spilled / len(mine), 3) if mine else None,
                     "reasons": dict(Counter(d.get("reason") for d in mine)),
                     "gpu_util_mean": mean("gpu_util"), "gpu_power_w_mean": mean("gpu_power_w"),
                     "nvml_util_mean": mean("nvml_util"),
                     "nvml_power_w_mean": mean("nvml_power_w")})
    return rows


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    stages = [int(s) for s in args.stages.split(",")]
    url = args.node.rstrip("/") + "/chat/completions"
    metrics_url = args.node.rstrip("/").removesuffix("/v1") + "/metrics"
    body = {"model": "auto", "max_tokens": args.max_tokens, "temperature": 0.8,
            "messages": [{"role": "user", "content": PROMPT}]}
    nvml = NvmlReader()
    decisions: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    windows: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=max(stages) + 4)
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=args.timeout_s, limits=limits) as client:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_loop(client, metrics_url, nvml, t0, samples, stop))
        for stage in stages:
            start = time.monotonic()
            deadline = start + args.stage_s
            await asyncio.gather(*(client_loop(client, url, body, stage, deadline, t0, decisions)
                                   for _ in range(stage)))
            windows.append((start - t0, time.monotonic() - t0))
            print(f"stage {stage:>3}: {sum(1 for d in decisions if d['stage'] == stage)} "
                  "requests", flush=True)
        stop.set()
        await sampler
    nvml.close()
    return {"machine": {"node": platform.node(), "python": platform.python_version(),
                        "nvml": nvml.available},
            "config": vars(args),
            "stages": summarize(stages, decisions, samples, windows, args.local_backend),
            "decisions": decisions, "telemetry": samples}


def dump(result: dict[str, Any]) -> str:
    """JSON with one record per line: diffable, and small enough to commit."""
    def one(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), default=str)

    parts = []
    for key, value in result.items():
        if isinstance(value, list):
            rows = ",\n".join("  " + one(v) for v in value)
            parts.append(f" {one(key)}: [\n{rows}\n ]")
        else:
            parts.append(f" {one(key)}: {one(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node", required=True, help="the node's base URL (…/v1), loopback")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stages", default="1,2,4,8,16,32,64")
    p.add_argument("--stage-s", type=float, default=12.0)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.add_argument("--local-backend", default="local-gpu", help="the node's local backend name")
    args = p.parse_args()
    if not args.node.startswith(("http://127.0.0.1", "http://localhost")):
        p.error("--node must be on loopback")
    result = asyncio.run(drive(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(result))
    for row in result["stages"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
