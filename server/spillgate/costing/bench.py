"""`spillgate bench`: this node's throughput per unit, measured with its own engine.

Starts the configured local engine (or uses the attached one), keeps `concurrency` chat
requests in flight for `duration_s` (the engine's batch size by default: the throughput a
saturated unit delivers), and counts the prompt and completion tokens the engine reports in
each answer's `usage`, over the time from the first request to the last answer. The result
divided by `cost.units` is the `tokens_per_second` of one unit, the figure
models/hardware.yaml and `spillgate plan` use.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from spillgate.backends.base import Backend, UpstreamCall
from spillgate.catalog import Catalog
from spillgate.errors import ConfigError
from spillgate.settings import LocalBackendSettings, Settings, load_settings

# Varied, ordinary prompts (a real workload's shape, not a cache-friendly repetition).
PROMPTS = (
    "Explain in a few sentences how a hash table handles collisions.",
    "Write a short note to a colleague about moving tomorrow's meeting to Friday.",
    "List three ways to reduce the memory use of a Python program.",
    "Describe the water cycle for a ten-year-old.",
    "Summarize the trade-offs between renting and buying GPUs for inference.",
    "What are the main differences between TCP and UDP?",
)


@dataclass(frozen=True, slots=True)
class BenchResult:
    backend: str
    units: int
    seconds: float
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.seconds

    @property
    def per_unit(self) -> Decimal:
        """Tokens/s of one unit, rounded to a whole token (a planning figure)."""
        per_unit = Decimal(repr(self.tokens_per_second)) / max(1, self.units)
        return per_unit.quantize(Decimal(1), ROUND_HALF_EVEN)


async def drive(backend: Backend, model: str, *, concurrency: int, duration_s: float,
                max_tokens: int, backend_name: str, units: int) -> BenchResult:
    """Keep `concurrency` requests in flight for `duration_s`, then let the last ones
    finish; tokens of every answer over the whole time (the short tail with fewer requests
    in flight makes the figure slightly conservative)."""
    counter = itertools.count()
    totals = [0, 0, 0]  # requests, prompt tokens, completion tokens
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            body = {"model": model, "max_tokens": max_tokens, "temperature": 0.7,
                    "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}]}
            reply = await backend.complete(
                UpstreamCall("chat/completions", f"bench-{n}", model), body)
            usage = reply.get("usage") or {}
            totals[0] += 1
            totals[1] += int(usage.get("prompt_tokens") or 0)
            totals[2] += int(usage.get("completion_tokens") or 0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return BenchResult(backend_name, units, time.perf_counter() - started, *totals)


def _pick(settings: Settings, name: str | None) -> LocalBackendSettings:
    for local in settings.local:
        if name in (None, local.name):
            return local
    raise ConfigError(f"bench: no local backend named {name!r}")


async def run_bench(settings: Settings, args: argparse.Namespace) -> BenchResult:
    local = _pick(settings, args.backend)
    only = settings.model_copy(update={"local": [local], "providers": [], "routes": []})
    from spillgate.backends.registry import build_backends  # aiohttp: not for `--help`

    backends = build_backends(only, Catalog.load(settings.models_dir / "catalog.yaml"))
    supervisor = backends.supervisors[local.name]
    try:
        await supervisor.start()
        if not await supervisor.wait_ready(local.startup_timeout_s):
            raise ConfigError(f"bench: engine {local.name} did not become ready")
        return await drive(
            backends.backends[local.name], local.model,
            concurrency=args.concurrency or local.max_batch, duration_s=args.duration,
            max_tokens=args.max_tokens, backend_name=local.name, units=settings.cost.units,
        )
    finally:
        await backends.aclose()


def _bench(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    result = asyncio.run(run_bench(settings, args))
    if result.requests == 0:
        print("spillgate: bench: no request finished", file=sys.stderr)
        return 1
    print(f"# {result.backend}: {result.requests} requests in {result.seconds:.1f} s, "
          f"{result.prompt_tokens} prompt + {result.completion_tokens} completion tokens, "
          f"{result.tokens_per_second:.1f} tokens/s over {result.units} unit(s)")
    print(f"tokens_per_second: {result.per_unit}")
    return 0


def add_bench_command(sub: Any) -> None:
    bench = sub.add_parser("bench", help="measure tokens/s per unit with this node's engine")
    bench.add_argument("--config", type=Path, help="node YAML config (env overrides apply)")
    bench.add_argument("--backend", help="local backend to measure (default: the first)")
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    bench.add_argument("--concurrency", type=int, default=0,
                       help="requests in flight (default: the backend's max_batch)")
    bench.add_argument("--max-tokens", type=int, default=128, help="max_tokens per request")
    bench.set_defaults(func=_bench)
