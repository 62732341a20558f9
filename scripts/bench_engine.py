"""Aggregate generation throughput and time-to-first-token of the llama.cpp engine by concurrency.

Starts the engine (bundled SmolLM2 unless --model-path) on a free loopback port, or uses --url
of a running one. At each concurrency level C, C clients stream chat completions of up to
`--max-tokens` tokens back to back (closed loop); after `--warmup` seconds the engine's own
generated-token counter is read at both ends of a `--window`, so the figure is the steady
state with C requests always in flight (a fixed set of requests would end in a tail of lone
stragglers and understate batching). TTFT is the median over requests started in the window.

Ratios only mean something when both sides share the machine's load, so one run measures
everything side by side: `--engine LABEL=ARGS` (repeatable) starts one engine per variant
(`ARGS` are extra engine flags, plus `--src DIR` to run another checkout's `server/` tree:
the "before" of a change), and `--repeat N` cycles through every variant and level N times,
reporting per (variant, level) the median of the N runs. Prints a table and writes JSON.

`cpu ms/tok` is the CPU time (user + system) the engine's processes (its HTTP process and its
decode process) spent over the window per generated token: on a machine shared with other
work, where tokens/s mostly says how much CPU the engine got, it still says how much work a
token costs (with `--n-threads 1`; llama.cpp's threads spin at barriers when there are more).

    .venv/bin/python scripts/bench_engine.py --levels 1 4 8 --max-tokens 96
    .venv/bin/python scripts/bench_engine.py --repeat 3 --engine 'before=--src /tmp/old/server' \
        --engine 'after='

`--think-ms N`: each client waits N ms between its requests, so a new request does not come
the moment one ends (at 4 streams some slot then idles: tokens/s is not the steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PROMPTS = (
    "Write a long, detailed story about a lighthouse keeper and a storm.",
    "Explain in detail how a steam engine works, step by step.",
    "Count from 1 to 500, separated by commas.",
    "Describe every room of a large old house in great detail.",
)


def bundled_gguf() -> str:
    sys.path.insert(0, str(REPO / "server"))
    from spillgate.catalog import Catalog, resolve_gguf

    catalog = Catalog.load(REPO / "models" / "catalog.yaml")
    return str(resolve_gguf(catalog.local_model("smollm2")))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def split_variant(spec: str) -> tuple[str, list[str], str | None]:
    """`LABEL=ARGS` → (label, engine flags, other server/ tree or None)."""
    label, _, rest = spec.partition("=")
    flags = shlex.split(rest)
    src = None
    if "--src" in flags:
        at = flags.index("--src")
        src = flags[at + 1]
        del flags[at:at + 2]
    return label or "engine", flags, src


@contextlib.contextmanager
def engine(args: argparse.Namespace, spec: str) -> Iterator[tuple[str, int | None]]:
    """Base URL (…/v1) and process id of a started engine for this variant (or --url, None)."""
    if args.url:
        yield args.url, None
        return
    _label, flags, src = split_variant(spec)
    port = free_port()
    command = [sys.executable, "-m", "spillgate.engines.llamacpp", "--model-path",
               args.model_path or bundled_gguf(), "--served-name", "bench", "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-queue", "64"]
    if args.n_threads:
        command += ["--n-threads", str(args.n_threads)]
    env = {**os.environ}
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(command + flags, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"engine {spec!r} did not start")
            time.sleep(0.2)
        yield base + "/v1", proc.pid
    finally:
        proc.terminate()
        proc.wait(15)


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int,
                      firsts: list[tuple[float, float]] | None = None) -> float:
    """Stream one chat completion; seconds to its first content, also appended to `firsts`
    as (start, seconds) the moment it arrives."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.7, "stream": True}
    start = time.perf_counter()
    ttft = 0.0
    async with client.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not ttft and line.startswith("data: {") and '"content":"' in line:
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    ttft = time.perf_counter() - start
                    if firsts is not None:
                        firsts.append((start, ttft))
    return ttft


async def engine_figure(client: httpx.AsyncClient, name: str) -> float:
    """One sample of the engine's /metrics (e.g. its generated-token counter)."""
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"the engine exposes no {name}")


async def generated_tokens(client: httpx.AsyncClient) -> float:
    return await engine_figure(client, "spillgate_engine_generation_tokens_total")


async def drained(client: httpx.AsyncClient, limit_s: float = 120.0) -> None:
    """Until the engine has dropped every cancelled request: the next measurement (or the
    next variant's, sharing the cores) must not pay for this one's leftovers."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if (await engine_figure(client, "spillgate_engine_requests_running") == 0
                and await engine_figure(client, "spillgate_engine_requests_waiting") == 0):
            return
        await asyncio.sleep(0.2)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children (the decode process)."""
    if pid is None:
        return 0.0
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def level(base: str, pid: int | None, model: str, concurrency: int,
                args: argparse.Namespace) -> dict[str, Any]:
    """`concurrency` clients send request after request (closed loop); after `--warmup` s,
    tokens are counted over a `--window` of seconds in which every client is always busy,
    so no tail of lone stragglers dilutes the figure."""
    root = base.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=base, timeout=600) as client, \
            httpx.AsyncClient(base_url=root, timeout=30) as admin:
        await one_request(client, model, "Hi", 4)  # warm-up
        samples: list[tuple[float, float]] = []

        async def worker(index: int) -> None:
            for r in range(10**6):
                prompt = PROMPTS[(index + r) % len(PROMPTS)]
                await one_request(client, model, prompt, args.max_tokens, samples)
                if args.think_ms:  # a pause before asking again (not back to back)
                    await asyncio.sleep(args.think_ms / 1000)

        workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
        await asyncio.sleep(args.warmup)
        first, opened, cpu_first = (await generated_tokens(admin), time.perf_counter(),
                                    cpu_seconds(pid))
        await asyncio.sleep(args.window)
        last, closed, cpu_last = (await generated_tokens(admin), time.perf_counter(),
                                  cpu_seconds(pid))
        for task in workers:  # the engine frees a slot whose client goes away
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await drained(admin)
    wall = closed - opened
    ttfts = [t for began, t in samples if opened <= began and began + t <= closed]
    return {"concurrency": concurrency, "first_tokens": len(ttfts), "tokens": int(last - first),
            "wall_s": round(wall, 3), "aggregate_tok_s": round((last - first) / wall, 1),
            "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
            "cpu_ms_per_token": (round(1000 * (cpu_last - cpu_first) / (last - first), 2)
                                 if pid is not None and last > first else None)}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def summarize(label: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: the median over repeats; ratios against this variant's concurrency 1."""
    rows = []
    for conc in sorted({r["concurrency"] for r in runs}):
        mine = [r for r in runs if r["concurrency"] == conc]
        rows.append({"variant": label, "concurrency": conc, "runs": len(mine),
                     "tokens": sum(r["tokens"] for r in mine),
                     "aggregate_tok_s": round(statistics.median(
                         r["aggregate_tok_s"] for r in mine), 1),
                     "ttft_p50_s": _median([r["ttft_p50_s"] for r in mine]),
                     "cpu_ms_per_token": _median([r["cpu_ms_per_token"] for r in mine]),
                     "samples": [r["aggregate_tok_s"] for r in mine]})
    single = next((r for r in rows if r["concurrency"] == 1), None)
    for row in rows:
        row["speedup_vs_single"] = (round(row["aggregate_tok_s"] / single["aggregate_tok_s"], 2)
                                    if single else None)
        row["ttft_vs_single"] = (round(row["ttft_p50_s"] / single["ttft_p50_s"], 2)
                                 if single and single["ttft_p50_s"] and row["ttft_p50_s"]
                                 else None)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'variant':>10} {'conc':>4} {'runs':>4} {'tokens':>6} {'agg tok/s':>9} "
          f"{'x one':>6} {'ttft p50 s':>10} {'ttft x one':>10} {'cpu ms/tok':>10}")
    for row in rows:
        shown = {k: "-" if v is None else v for k, v in row.items()}
        print(f"{shown['variant']:>10} {shown['concurrency']:>4} {shown['runs']:>4} "
              f"{shown['tokens']:>6} {shown['aggregate_tok_s']:>9} "
              f"{shown['speedup_vs_single']:>6} {shown['ttft_p50_s']:>10} "
              f"{shown['ttft_vs_single']:>10} {shown['cpu_ms_per_token']:>10}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL (…/v1) of a running engine; else start one")
    parser.add_argument("--model", default="bench", help="model name with --url")
    parser.add_argument("--model-path", help="GGUF to serve (default: bundled SmolLM2)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before counting starts")
    parser.add_argument("--window", type=float, default=15.0,
                        help="seconds over which tokens are counted")
    parser.add_argument("--repeat", type=int, default=1,
                        help="cycles over every variant and level; medians are reported")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-batch", type=int, default=4,
                        help="the engine's slots (default: the engine's own default, 4)")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="each client pauses this long between its requests (default: "
                             "asks again at once)")
    parser.add_argument("--n-threads", type=int)
    parser.add_argument("--engine", action="append", dest="variants", metavar="LABEL=ARGS",
                        help="a variant to compare (repeatable); default one plain engine")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench_engine.json")
    args = parser.parse_args()
    variants = args.variants or ["engine="]
    model = args.model if args.url else "bench"
    runs: dict[str, list[dict[str, Any]]] = {split_variant(v)[0]: [] for v in variants}
    with contextlib.ExitStack() as stack:
        bases = {split_variant(v)[0]: stack.enter_context(engine(args, v)) for v in variants}
        for cycle in range(args.repeat):
            for label in bases:
                for conc in args.levels:
                    run = asyncio.run(level(*bases[label], model, conc, args))
                    runs[label].append({**run, "cycle": cycle})
                    print(f"  cycle {cycle} {label} c={conc}: {run['aggregate_tok_s']} tok/s, "
                          f"ttft p50 {run['ttft_p50_s']} s, cpu {run['cpu_ms_per_token']} "
                          "ms/token", flush=True)
    rows = [row for label, mine in runs.items() for row in summarize(label, mine)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "max_batch": args.max_batch, "max_tokens": args.max_tokens, "warmup_s": args.warmup,
        "window_s": args.window,
        "repeat": args.repeat, "variants": variants, "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(), "levels": rows,
        "llama_system_info": None if args.url else llama_build(),
        "runs": {label: mine for label, mine in runs.items()}}, indent=2))
    print_table(rows)
    print(f"wrote {args.out}")
    return 0


def llama_build() -> str | None:
    """What this environment's llama.cpp build reports (AVX2 only, AVX-512, BF16: it decides
    which kernels run), read in a child as the engines are started; None if there is none.
    A variant's `--src` changes the server tree, not llama_cpp."""
    probe = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


if __name__ == "__main__":
    raise SystemExit(main())
