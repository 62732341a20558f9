"""Tokens/s a client gets streaming through the gateway vs straight from the llama.cpp engine,
in steady state.

C clients stream chat completions back to back (closed loop, the bench_engine prompts, 96
tokens, temperature 0.7); after a warm-up the engine's own generated-token counter is read at
both ends of a window, so the figure is the engine's output with C requests always in flight,
whichever path they came by. bench_gateway's burst measure (C identical requests sent at once,
timed to the last one's end) is kept beside it: there the gateway's few milliseconds per
request make the later requests miss the engine's first prefill step (one prompt alone, then
the rest), and the round also ends on a tail; in steady state arrivals are spread by the
streams' own ends, as in real traffic.

    .venv/bin/python scripts/stream_share.py --rounds 4          # starts engine + gateway
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other scripts
from bench_engine import PROMPTS

COUNTER = "spillgate_engine_generation_tokens_total"


async def _figure(session: aiohttp.ClientSession, metrics_url: str, name: str) -> float:
    async with session.get(metrics_url) as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{metrics_url} exposes no {name}")


async def _stream_forever(session: aiohttp.ClientSession, url: str, first: int) -> None:
    turn = first
    while True:
        body = {"model": "smollm2", "max_tokens": 96, "temperature": 0.7, "stream": True,
                "messages": [{"role": "user", "content": PROMPTS[turn % len(PROMPTS)]}]}
        async with session.post(url, json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
            async for _ in response.content.iter_any():
                pass
        turn += 1


async def _drained(session: aiohttp.ClientSession, metrics_url: str) -> None:
    """Until the engine has dropped every cancelled stream (the next round starts clean)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = await _figure(session, metrics_url, "spillgate_engine_requests_running")
        waiting = await _figure(session, metrics_url, "spillgate_engine_requests_waiting")
        if running == waiting == 0:
            return
        await asyncio.sleep(0.1)


async def steady_tps(chat_url: str, metrics_url: str, concurrency: int, warmup_s: float,
                     window_s: float) -> float:
    """The engine's generated tokens/s while `concurrency` clients stream through `chat_url`."""
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(_stream_forever(session, chat_url, i))
                   for i in range(concurrency)]
        try:
            await asyncio.sleep(warmup_s)
            began, before = time.perf_counter(), await _figure(session, metrics_url, COUNTER)
            await asyncio.sleep(window_s)
            ended, after = time.perf_counter(), await _figure(session, metrics_url, COUNTER)
            for client in clients:
                if client.done():  # a client that failed: the figure would be wrong
                    client.result()
        finally:
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
        await _drained(session, metrics_url)
    return (after - before) / (ended - began)


def share(engine_url: str, gateway_url: str, levels: tuple[int, ...], rounds: int,
          warmup_s: float, window_s: float) -> dict[str, Any]:
    """Per level: medians of `rounds` pairs of windows, direct and gateway back to back in
    alternating order (neither always runs on what the other left), and the median of the
    pairs' own ratios (the machine's drift between pairs cancels)."""
    metrics = engine_url.removesuffix("/v1") + "/metrics"
    out: dict[str, Any] = {}
    for c in levels:
        runs: dict[str, list[float]] = {"direct": [], "gateway": []}
        for i in range(rounds):
            pair = [("direct", engine_url), ("gateway", gateway_url)]
            for name, base in pair[::-1] if i % 2 else pair:
                runs[name].append(asyncio.run(steady_tps(base + "/chat/completions", metrics,
                                                         c, warmup_s, window_s)))
        d, g = statistics.median(runs["direct"]), statistics.median(runs["gateway"])
        paired = statistics.median(v / w for v, w in zip(runs["gateway"], runs["direct"],
                                                         strict=True))
        out[str(c)] = {"direct_tps": d, "gateway_tps": g, "share": g / d,
                       "paired_share": paired, "runs": runs}
    return out


def main() -> None:
    from tests.support import bundled_gguf, free_port, spawn

    from bench_gateway import _start_gateway

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=Path("var/stream_share.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp, port = Path(tmp_name), free_port()
        engine_url = f"http://127.0.0.1:{port}/v1"
        argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
                "--served-name", "smollm2", "--port", str(port), "--max-batch", "4"]
        with spawn(argv, tmp / "engine.log", engine_url, f"http://127.0.0.1:{port}/health"), \
                _start_gateway(tmp, engine_url) as gw:
            result = share(engine_url, gw.base_url, tuple(args.levels), args.rounds,
                           args.warmup, args.window)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for c, r in result.items():
        print(f"c={c}: direct {r['direct_tps']:.1f} tok/s, gateway {r['gateway_tps']:.1f} "
              f"tok/s, share {100 * r['share']:.1f}%  (runs {r['runs']})")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
