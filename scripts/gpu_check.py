"""Check the NVML reader on a real GPU: idle vs load, as the telemetry sampler sees it.

    .venv/bin/python scripts/gpu_check.py [--idle-s 3] [--load-s 6] [--interval-s 0.25]

Samples every GPU through spillgate's own NvmlReader while idle, then while a torch
matrix-multiply loop keeps GPU 0 busy (if torch with CUDA is importable; otherwise it says
there is no load generator and reports idle only). Prints a table of utilization, power,
memory and temperature (idle mean, load mean, load max) and writes var/gpu_check.json.
Read-only: it never changes a GPU setting (no clocks, power limits or modes). Without NVML or
a GPU it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spillgate.telemetry.nvml import NvmlReader
from spillgate.telemetry.snapshot import GpuReading

ROOT = Path(__file__).resolve().parents[1]
FIELDS: dict[str, Callable[[GpuReading], float | None]] = {
    "utilization_pct": lambda g: g.utilization_ratio * 100,
    "power_w": lambda g: g.power_watts,
    "memory_used_gib": lambda g: g.memory_used_bytes / 2**30,
    "temperature_c": lambda g: g.temperature_c,
}


def sample(reader: NvmlReader, seconds: float, interval_s: float) -> list[GpuReading]:
    readings: list[GpuReading] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readings.extend(reader.read())
        time.sleep(interval_s)
    return readings


def summarize(readings: Sequence[GpuReading]) -> dict[int, dict[str, dict[str, float]]]:
    out: dict[int, dict[str, dict[str, float]]] = {}
    for index in sorted({g.index for g in readings}):
        mine = [g for g in readings if g.index == index]
        out[index] = {}
        for name, get in FIELDS.items():
            values = [v for v in (get(g) for g in mine) if v is not None]
            if values:
                out[index][name] = {"mean": statistics.fmean(values), "max": max(values),
                                    "n": float(len(values))}
    return out


class MatmulLoad:
    """Keeps GPU 0 busy with bf16 matrix multiplies in a thread until stopped."""

    def __init__(self, size: int = 8192) -> None:
        import torch

        self.torch = torch
        self.size = size
        self.stop = threading.Event()
        self.flops = 0.0
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        torch = self.torch
        a = torch.randn(self.size, self.size, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(self.size, self.size, device="cuda", dtype=torch.bfloat16)
        c = torch.empty_like(a)
        torch.cuda.synchronize()
        start = time.perf_counter()
        while not self.stop.is_set():
            for _ in range(20):
                torch.matmul(a, b, out=c)
            torch.cuda.synchronize()
            self.flops += 20 * 2 * self.size**3
        self.seconds = time.perf_counter() - start

    def __enter__(self) -> MatmulLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def load_generator() -> tuple[MatmulLoad | None, str]:
    try:
        import torch
    except ImportError:
        return None, "no load generator: torch is not importable"
    if not torch.cuda.is_available():
        return None, "no load generator: torch sees no CUDA device"
    return MatmulLoad(), f"torch {torch.__version__} bf16 matmul 8192^2 on cuda:0"


def print_table(idle: dict[int, Any], load: dict[int, Any]) -> None:
    print(f"{'gpu':>3}  {'metric':<16}{'idle mean':>11}{'load mean':>11}{'load max':>11}")
    for index in sorted(idle):
        for name in FIELDS:
            i = idle[index].get(name, {})
            loaded = load.get(index, {}).get(name, {})
            cells = [f"{v:11.1f}" if v is not None else f"{'-':>11}"
                     for v in (i.get("mean"), loaded.get("mean"), loaded.get("max"))]
            print(f"{index:>3}  {name:<16}{''.join(cells)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle-s", type=float, default=3.0)
    p.add_argument("--load-s", type=float, default=6.0)
    p.add_argument("--interval-s", type=float, default=0.25)
    p.add_argument("--out", type=Path, default=ROOT / "var" / "gpu_check.json")
    args = p.parse_args()
    reader = NvmlReader()
    if not reader.available:
        print("gpu_check: skipped: no NVML or no NVIDIA GPU on this machine "
              "(the node runs on engine signals alone)")
        return 0
    try:
        idle = summarize(sample(reader, args.idle_s, args.interval_s))
        generator, how = load_generator()
        print(f"load: {how}")
        load: dict[int, Any] = {}
        tflops = None
        if generator is not None:
            with generator:
                time.sleep(1.0)  # let clocks and the utilization window catch up
                load = summarize(sample(reader, args.load_s, args.interval_s))
            tflops = generator.flops / generator.seconds / 1e12 if generator.seconds else None
    finally:
        reader.close()
    print_table(idle, load)
    if tflops is not None:
        print(f"load generator throughput: {tflops:.0f} TFLOP/s (bf16)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "host": platform.node(), "load_generator": how, "interval_s": args.interval_s,
        "idle": idle, "load": load, "load_tflops": tflops,
    }, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
