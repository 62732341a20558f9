"""Overflow benchmark: always-local vs always-API vs spillgate `auto` under a load ramp to 2x.

Real parts on loopback: our llama.cpp engine with the bundled model, the fake provider
answering after a realistic API latency (300 ms), and one fresh node per mode. The script

1. measures local capacity (requests/s with the engine's batch slots full);
2. offers the same open-loop schedule to each mode: Poisson arrivals ramping from 0.5x to 2x
   that capacity, holding 2x, then falling back to 0.5x (to show recovery); 10% of requests
   carry a valid card number or an e-mail address (sensitive: must stay local);
3. reports per mode: share of requests meeting the TTFT objective (errors count as misses),
   p50/p95 TTFT, share spilled to the paid API, API spend from the node's own ledger, and
   sensitive requests that reached the paid API (from the fake's recording).

    .venv/bin/python scripts/bench_overflow.py [--quick] [--out var/bench_overflow.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import REPO, bundled_gguf, free_port, spawn, wait_http, write_config

MAX_TOKENS = 24
BATCH = 4
HEADROOM = 0.8  # the node's default share of the TTFT objective planned for queueing
SENSITIVE_SHARE = 0.10
SENSITIVE_TEXTS = ("Refund card 4111 1111 1111 1111 please.",
                   "Write to jane.doe@example.com about the order.")
SENSITIVE_MARKERS = ("4111 1111 1111 1111", "jane.doe@example.com")
MODES = {"always-local": "smollm2", "always-API": "openai/gpt-4o-mini", "auto": "auto"}
ENV = {"FAKE_OPENAI_KEY": "sk-fake-openai-key-for-bench"}


@dataclass
class Outcome:
    at: float
    sensitive: bool
    status: int
    ttft_s: float | None
    backend: str


def _body(model: str, sensitive: bool, rng: random.Random) -> dict[str, Any]:
    text = rng.choice(SENSITIVE_TEXTS) if sensitive else f"Name a colour. ({rng.random():.6f})"
    return {"model": model, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": text}]}


async def _one(session: aiohttp.ClientSession, url: str, body: dict[str, Any], at: float,
               sensitive: bool) -> Outcome:
    began = time.perf_counter()
    ttft = None
    async with session.post(url, json=body) as r:
        backend = r.headers.get("x-spillgate-backend", "")
        async for line in r.content:
            if ttft is None and _has_token(line):
                ttft = time.perf_counter() - began
        if r.status != 200:
            ttft = None
        return Outcome(at, sensitive, r.status, ttft, backend)


def _has_token(line: bytes) -> bool:
    """A streamed chunk carrying generated text (not the role-only opening chunk)."""
    if not line.startswith(b"data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def schedule(capacity_rps: float, seconds: tuple[float, float, float], seed: int,
             ) -> list[tuple[float, bool]]:
    """Arrival times (s) of an open-loop Poisson process whose rate ramps 0.5x → 2x capacity,
    holds 2x, then drops to 0.5x; each arrival sensitive with probability 10%."""
    ramp, hold, cool = seconds
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while t < ramp + hold + cool:
        rate = rate_at(t, capacity_rps, seconds)
        t += rng.expovariate(rate)
        arrivals.append((t, rng.random() < SENSITIVE_SHARE))
    return [a for a in arrivals if a[0] < ramp + hold + cool]


def rate_at(t: float, capacity: float, seconds: tuple[float, float, float]) -> float:
    ramp, hold, _ = seconds
    if t < ramp:
        return capacity * (0.5 + 1.5 * t / ramp)
    return capacity * (2.0 if t < ramp + hold else 0.5)


def minimum_spill_share(capacity: float, seconds: tuple[float, float, float],
                        local_rps: float | None = None) -> float:
    """Share of offered requests above local capacity: ∫max(0, λ-μ) / ∫λ (numerically).
    λ follows the schedule built on `capacity`; μ is `local_rps` when given (what the engine
    actually served while sharing the machine), else `capacity`."""
    mu = capacity if local_rps is None else local_rps
    total = sum(seconds)
    steps = 10_000
    dt = total / steps
    offered = excess = 0.0
    for i in range(steps):
        rate = rate_at((i + 0.5) * dt, capacity, seconds)
        offered += rate * dt
        excess += max(0.0, rate - mu) * dt
    return excess / offered


async def offer(url: str, model: str, arrivals: list[tuple[float, bool]], seed: int,
                ) -> list[Outcome]:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        began = time.perf_counter()
        tasks = []
        for at, sensitive in arrivals:
            delay = at - (time.perf_counter() - began)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(
                _one(session, url, _body(model, sensitive, rng), at, sensitive)))
        return list(await asyncio.gather(*tasks))


async def measure_capacity(url: str, seconds: float) -> float:
    """Completed requests/s with BATCH closed-loop clients (the engine's slots kept full)."""
    rng = random.Random(1)
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as session:
        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                outcome = await _one(session, url, _body("smollm2", False, rng), 0, False)
                done += outcome.status == 200
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(BATCH)))
        return done / (time.perf_counter() - began)


def _node_config(tmp: Path, engine: str, fake: str, port: int, slo_ms: float,
                 mode: str) -> Path:
    return write_config(tmp / f"node-{mode}.yaml", {
        "server": {"port": port},
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [engine],
                   "max_batch": BATCH, "max_queue": 64}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": fake + "/v1",
                       "api_key_env": "FAKE_OPENAI_KEY", "models": ["gpt-4o-mini"]}],
        "routes": [{"name": "auto", "policy": "auto", "local": "smollm2",
                    "paid": "openai/gpt-4o-mini", "ttft_slo_ms": slo_ms}],
        "telemetry": {"interval_s": 0.25, "stale_after_s": 1.5, "min_dwell_s": 2.0,
                      "headroom": HEADROOM},
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger-{mode}.db"},
    })


def api_spend(tmp: Path, mode: str) -> float:
    """API spend recorded in the node's ledger, read back through `spillgate report`."""
    out = subprocess.run(
        [sys.executable, "-m", "spillgate", "report", "--since", "1h", "--format", "json",
         "--dsn", f"sqlite+aiosqlite:///{tmp}/ledger-{mode}.db"],
        check=True, capture_output=True, text=True, cwd=REPO,
    ).stdout
    return float(json.loads(out)["totals"]["api_usd"])


def sensitive_leaked(fake: str) -> int:
    recorded = httpx.get(fake + "/_fake/requests").json()
    return sum(any(m in json.dumps(r) for m in SENSITIVE_MARKERS) for r in recorded)


def summarize(outcomes: list[Outcome], slo_s: float, spend: float, leaked: int,
              ) -> dict[str, Any]:
    ttfts = sorted(o.ttft_s for o in outcomes if o.ttft_s is not None)
    n = len(outcomes)

    def pct(q: float) -> float | None:
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None

    return {
        "requests": n,
        "met_slo_share": sum(o.ttft_s is not None and o.ttft_s <= slo_s for o in outcomes) / n,
        "errors": sum(o.status != 200 for o in outcomes),
        "ttft_p50_s": pct(0.5), "ttft_p95_s": pct(0.95),
        "spilled_share": sum(o.backend == "openai" for o in outcomes) / n,
        "api_spend_usd": spend,
        "sensitive_sent_to_api": leaked,
        "sensitive_requests": sum(o.sensitive for o in outcomes),
        "misses": [{"at_s": round(o.at, 2), "backend": o.backend, "sensitive": o.sensitive,
                    "status": o.status, "ttft_s": o.ttft_s}
                   for o in outcomes if o.ttft_s is None or o.ttft_s > slo_s],
    }


def run_mode(tmp: Path, mode: str, engine: str, fake: str, arrivals: list[tuple[float, bool]],
             slo_ms: float, seconds: tuple[float, float, float]) -> dict[str, Any]:
    httpx.delete(fake + "/_fake/requests").raise_for_status()
    port = free_port()
    config = _node_config(tmp, engine, fake, port, slo_ms, mode)
    argv = ["-m", "spillgate", "serve", "--config", str(config)]
    with spawn(argv, tmp / f"node-{mode}.log", f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/readyz", env=ENV):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        outcomes = asyncio.run(offer(url, MODES[mode], arrivals, seed=11))
    result = summarize(outcomes, slo_ms / 1000, api_spend(tmp, mode), sensitive_leaked(fake))
    ramp, hold, _ = seconds
    held = [o for o in outcomes if ramp <= o.at < ramp + hold and o.backend == "local-cpu"]
    result["local_rps_at_2x"] = len(held) / hold
    result["timeline"] = _timeline(outcomes)
    return result


def _timeline(outcomes: list[Outcome], step_s: float = 5.0) -> list[dict[str, float]]:
    """Spilled share per time window: shows spilling under overload and recovery after."""
    windows: dict[int, list[Outcome]] = {}
    for o in outcomes:
        windows.setdefault(int(o.at // step_s), []).append(o)
    return [{"from_s": k * step_s, "requests": len(v),
             "spilled_share": sum(o.backend == "openai" for o in v) / len(v)}
            for k, v in sorted(windows.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter phases (smoke run)")
    parser.add_argument("--slo-ms", type=float, default=1500.0, help="TTFT objective")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench_overflow.json")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    seconds = (10.0, 10.0, 8.0) if args.quick else (30.0, 30.0, 20.0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        e_port, f_port = free_port(), free_port()
        engine, fake = f"http://127.0.0.1:{e_port}/v1", f"http://127.0.0.1:{f_port}"
        e_argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
                  "--served-name", "smollm2", "--port", str(e_port),
                  "--max-batch", str(BATCH), "--max-queue", "64"]
        f_argv = ["-m", "spillgate.fakes.provider", "--port", str(f_port),
                  "--latency-ms", "300"]
        with spawn(e_argv, tmp / "engine.log", engine, f"http://127.0.0.1:{e_port}/health"), \
                spawn(f_argv, tmp / "fake.log", fake, fake + "/health"):
            wait_http(fake + "/health")
            capacity = asyncio.run(measure_capacity(engine + "/chat/completions",
                                                    8.0 if args.quick else 20.0))
            arrivals = schedule(capacity, seconds, seed=5)
            results: dict[str, Any] = {
                "capacity_rps": capacity, "phases_s": seconds, "slo_ms": args.slo_ms,
                "offered": len(arrivals),
                "minimum_spill_share": minimum_spill_share(capacity, seconds),
                "modes": {},
            }
            for mode in args.modes:
                results["modes"][mode] = run_mode(tmp, mode, engine, fake, arrivals,
                                                  args.slo_ms, seconds)
                time.sleep(3)  # let the engine drain between modes
    table = render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table)
    print(f"\nwritten to {args.out}")


def render(results: dict[str, Any]) -> str:
    lines = [
        f"local capacity {results['capacity_rps']:.2f} req/s; offered {results['offered']} "
        f"requests ramping to 2x; TTFT objective {results['slo_ms']:.0f} ms; minimum spill "
        f"share {100 * results['minimum_spill_share']:.1f}%", "",
        "| mode | met TTFT objective | TTFT p50 / p95 s | spilled | API spend USD "
        "| sensitive sent to API | errors |", "|---|---|---|---|---|---|---|",
    ]
    for mode, r in results["modes"].items():
        p50 = f"{r['ttft_p50_s']:.2f}" if r["ttft_p50_s"] is not None else "-"
        p95 = f"{r['ttft_p95_s']:.2f}" if r["ttft_p95_s"] is not None else "-"
        lines.append(
            f"| {mode} | {100 * r['met_slo_share']:.1f}% | {p50} / {p95} | "
            f"{100 * r['spilled_share']:.1f}% | {r['api_spend_usd']:.6f} | "
            f"{r['sensitive_sent_to_api']} of {r['sensitive_requests']} | {r['errors']} |")
    if {"auto", "always-API"} - set(results["modes"]):
        return "\n".join(lines)
    auto, api = results["modes"]["auto"], results["modes"]["always-API"]
    colocated = minimum_spill_share(results["capacity_rps"], tuple(results["phases_s"]),
                                    auto["local_rps_at_2x"])
    results["minimum_spill_share_colocated"] = colocated
    lines += [
        "", f"auto: spilled / minimum = "
        f"{auto['spilled_share'] / max(results['minimum_spill_share'], 1e-9):.2f}x against the "
        f"engine's capacity measured alone ({results['capacity_rps']:.2f} req/s), "
        f"{auto['spilled_share'] / max(colocated, 1e-9):.2f}x against what it served at 2x "
        f"while sharing the 2 cores with gateway, fake API and load generator "
        f"({auto['local_rps_at_2x']:.2f} req/s, minimum {100 * colocated:.1f}%)",
        f"auto: API spend / always-API = "
        f"{auto['api_spend_usd'] / max(api['api_spend_usd'], 1e-12):.2f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
