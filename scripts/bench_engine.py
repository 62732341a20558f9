"""Aggregate generation throughput of the llama.cpp engine at several concurrency levels.

Starts the engine (bundled SmolLM2 unless --model-path) on a free loopback port, or uses
--url of a running one; at each concurrency level C, C clients each stream `--rounds`
chat completions of `--max-tokens` tokens (ignore EOS is not available, so prompts ask for
long answers and the real completion counts are used). Prints a table and writes JSON.

    .venv/bin/python scripts/bench_engine.py --levels 1 2 4 8 --max-tokens 96
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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


@contextlib.contextmanager
def engine(args: argparse.Namespace, max_batch: int) -> Iterator[str]:
    if args.url:
        yield args.url
        return
    port = free_port()
    command = [sys.executable, "-m", "spillgate.engines.llamacpp", "--model-path",
               args.model_path or bundled_gguf(), "--served-name", "bench", "--port", str(port),
               "--max-batch", str(max_batch), "--max-queue", "64"]
    if args.n_threads:
        command += ["--n-threads", str(args.n_threads)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("engine did not start")
            time.sleep(0.1)
        yield base + "/v1"
    finally:
        proc.terminate()
        proc.wait(15)


async def one_request(client: httpx.AsyncClient, model: str, prompt: str,
                      max_tokens: int) -> tuple[int, float]:
    """Stream one chat completion; (completion tokens, seconds to first content)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.7, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async with client.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif not ttft and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - start
    return tokens, ttft


async def level(base: str, model: str, concurrency: int, rounds: int,
                max_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await one_request(client, model, "Hi", 4)  # warm-up

        async def worker(index: int) -> list[tuple[int, float]]:
            return [await one_request(client, model, PROMPTS[(index + r) % len(PROMPTS)],
                                      max_tokens) for r in range(rounds)]

        start = time.perf_counter()
        results = [x for per in await asyncio.gather(*(worker(i) for i in range(concurrency)))
                   for x in per]
        wall = time.perf_counter() - start
    tokens = sum(t for t, _ in results)
    return {"concurrency": concurrency, "requests": len(results), "tokens": tokens,
            "wall_s": round(wall, 3), "aggregate_tok_s": round(tokens / wall, 1),
            "per_stream_tok_s": round(tokens / wall / concurrency, 1),
            "ttft_mean_s": round(statistics.fmean(f for _, f in results), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL (…/v1) of a running engine; else start one")
    parser.add_argument("--model", default="bench", help="model name with --url")
    parser.add_argument("--model-path", help="GGUF to serve (default: bundled SmolLM2)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--n-threads", type=int)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench_engine.json")
    args = parser.parse_args()
    model = args.model if args.url else "bench"
    with engine(args, args.max_batch) as base:
        rows = [asyncio.run(level(base, model, c, args.rounds, args.max_tokens))
                for c in args.levels]
    single = rows[0]["aggregate_tok_s"] if rows and rows[0]["concurrency"] == 1 else None
    print(f"{'conc':>4} {'reqs':>4} {'tokens':>6} {'wall s':>7} {'agg tok/s':>9} "
          f"{'per-stream':>10} {'ttft s':>7} {'x single':>8}")
    for row in rows:
        row["speedup_vs_single"] = round(row["aggregate_tok_s"] / single, 2) if single else None
        print(f"{row['concurrency']:>4} {row['requests']:>4} {row['tokens']:>6} "
              f"{row['wall_s']:>7} {row['aggregate_tok_s']:>9} {row['per_stream_tok_s']:>10} "
              f"{row['ttft_mean_s']:>7} {row['speedup_vs_single'] or '-':>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"max_batch": args.max_batch, "max_tokens": args.max_tokens,
                                    "cpu_count": os.cpu_count(), "levels": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
