"""Batch API benchmark on the bundled model: one run, printed as a table and written as JSON.

(a) live traffic latency with and without a running batch: one live client sends chat
    requests with a random think time (so the engine has idle gaps for the batch), first
    with no batch, then while a large batch is running; p50/p95 of each and the ratio of
    the p95s (goal: at most 1.10). The batch is cancelled afterwards; the lines it finished
    and the times it stepped aside (preemptions) are reported.
(b) a batch of --lines lines end to end through the official OpenAI SDK with no live
    traffic: wall time, lines/s, tokens/s, and a check that the ledger holds exactly one
    settled row per line.

    .venv/bin/python scripts/bench_batch.py [--live 60] [--lines 1000] [--max-tokens 8]
        [--concurrency 1] [--fake-engine] [--out var/bench_batch.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import bundled_gguf, free_port, spawn, write_config

LIVE = {"model": "local", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Name a colour."}]}


def _batch_file(lines: int, max_tokens: int) -> bytes:
    return b"".join(orjson.dumps({
        "custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "local", "max_tokens": max_tokens,
                 "messages": [{"role": "user", "content": f"Write a fact about {i}."}]},
    }) + b"\n" for i in range(lines))


async def _live(url: str, count: int, seed: int) -> list[float]:
    """`count` requests, one at a time, 0.2-2.0 s of think time between them."""
    rng = random.Random(seed)
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            began = time.perf_counter()
            async with session.post(url + "/chat/completions", json=LIVE) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"live request answered {response.status}")
            latencies.append(time.perf_counter() - began)
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _wait(client: OpenAI, batch_id: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch.status}")
        time.sleep(0.5)


def _submit(client: OpenAI, lines: int, max_tokens: int) -> str:
    uploaded = client.files.create(file=("bench.jsonl", _batch_file(lines, max_tokens)),
                                   purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def _ledger(db: Path, batch_id: str) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT request_id, state, status, prompt_tokens + completion_tokens "
            "FROM requests WHERE json_extract(tags, '$.batch') = ?", (batch_id,)).fetchall()
        attempts = conn.execute("SELECT coalesce(sum(attempts), 0), count(*) FROM batch_lines "
                                "WHERE batch_id = ? AND state = 'done'", (batch_id,)).fetchone()
    return {"rows": len(rows), "distinct": len({r[0] for r in rows}),
            "settled_200": sum(1 for r in rows if r[1] == "settled" and r[2] == 200),
            "tokens": sum(int(r[3] or 0) for r in rows),
            "extra_attempts": int(attempts[0]) - int(attempts[1])}


def part_a(client: OpenAI, url: str, db: Path, live: int, seed: int) -> dict[str, Any]:
    baseline = asyncio.run(_live(url, live, seed))
    batch_id = _submit(client, 5000, 16)
    time.sleep(3)  # the batch is running before live traffic starts
    during = asyncio.run(_live(url, live, seed))
    client.batches.cancel(batch_id)
    ended = _wait(client, batch_id, 600)
    figures = _ledger(db, batch_id)
    return {
        "live_requests": live,
        "baseline_p50_ms": _pct(baseline, 0.50), "baseline_p95_ms": _pct(baseline, 0.95),
        "batch_p50_ms": _pct(during, 0.50), "batch_p95_ms": _pct(during, 0.95),
        "p95_ratio": _pct(during, 0.95) / _pct(baseline, 0.95),
        "batch_lines_done_meanwhile": ended.request_counts.completed,
        "batch_preemptions": figures["extra_attempts"],
    }


def part_b(client: OpenAI, db: Path, lines: int, max_tokens: int) -> dict[str, Any]:
    began = time.perf_counter()
    batch_id = _submit(client, lines, max_tokens)
    ended = _wait(client, batch_id, 24 * 3600)
    wall = time.perf_counter() - began
    figures = _ledger(db, batch_id)
    return {
        "lines": lines, "max_tokens": max_tokens, "status": ended.status,
        "completed": ended.request_counts.completed, "failed": ended.request_counts.failed,
        "wall_s": wall, "lines_per_s": lines / wall, "tokens_per_s": figures["tokens"] / wall,
        "ledger_rows": figures["rows"], "ledger_rows_distinct": figures["distinct"],
        "ledger_settled_200": figures["settled_200"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=60,
                        help="live requests per phase of (a); 0 skips (a)")
    parser.add_argument("--lines", type=int, default=1000,
                        help="lines of the batch in (b); 0 skips (b)")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of (b)'s lines")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="batch.concurrency of the node (lines in flight; default: the "
                             "node's default, 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fake-engine", action="store_true",
                        help="a loopback fake engine (20 ms answers) instead of the model")
    parser.add_argument("--out", type=Path, default=Path("var/bench_batch.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {"settings": {
        "concurrency": args.concurrency, "live": args.live, "seed": args.seed,
        "engine": "fake (20 ms)" if args.fake_engine else "llama.cpp SmolLM2-135M"}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        engine_port, node_port = free_port(), free_port()
        engine_url = f"http://127.0.0.1:{engine_port}/v1"
        engine = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
                  "--served-name", "smollm2", "--port", str(engine_port), "--max-batch", "4"]
        health = f"http://127.0.0.1:{engine_port}/health"
        if args.fake_engine:  # the batch machinery alone: an engine answering in 20 ms
            engine = ["-m", "spillgate.fakes.provider", "--port", str(engine_port),
                      "--latency-ms", "20"]
        config = write_config(tmp / "node.yaml", {
            "server": {"port": node_port},
            "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [engine_url]}],
            "routes": [{"name": "local", "policy": "local", "local": "smollm2"}],
            "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
            "telemetry": {"nvml": False},
            "batch": {"concurrency": args.concurrency},
        })
        url = f"http://127.0.0.1:{node_port}/v1"
        with spawn(engine, tmp / "engine.log", engine_url, health), \
                spawn(["-m", "spillgate", "serve", "--config", str(config)], tmp / "node.log",
                      url, f"http://127.0.0.1:{node_port}/readyz"):
            client = OpenAI(base_url=url, api_key="unused-on-loopback", max_retries=2)
            if args.live:
                results["live_latency"] = part_a(client, url, tmp / "ledger.db", args.live,
                                                 args.seed)
            if args.lines:
                results["end_to_end"] = part_b(client, tmp / "ledger.db", args.lines,
                                               args.max_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(render(results))


def render(results: dict[str, Any]) -> str:
    out = ["| figure | value |", "|---|---|"]
    for part, figures in results.items():
        for name, value in figures.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            out.append(f"| {part}.{name} | {shown} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
