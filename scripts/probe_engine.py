"""The ceiling under the engine: decode steps/s with no HTTP, and with the scheduler alone.

Layers, each at every concurrency level, in ONE run so the ratios share the machine's load of
the moment:
  bare       LlamaModel only: one llama_decode per step over N sequences + one C sample each
  scheduler  the engine's Scheduler (decode thread + asyncio consumers), no HTTP
  process    the decode process (`--decoder process`) with asyncio consumers, no HTTP
(the last layer, HTTP, is scripts/bench_engine.py). Generation ignores end-of-generation in
`bare` (fixed step count); the scheduler layer uses prompts that ask for long answers.

    .venv/bin/python scripts/probe_engine.py --levels 1 4 8 --tokens 64

`--timeline FILE` also stamps every call of the decode loop (bare and scheduler layers; see
step_timeline.py), adds the median step split to the table and writes every step to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_engine import PROMPTS, bundled_gguf  # noqa: E402
from spillgate.engines.llamacpp.decoder import DecoderProcess, DecoderSpec  # noqa: E402
from spillgate.engines.llamacpp.metrics import EngineMetrics  # noqa: E402
from spillgate.engines.llamacpp.model import (  # noqa: E402
    ContextShape,
    LlamaModel,
    SamplingParams,
)
from spillgate.engines.llamacpp.scheduler import Job, Scheduler, SchedulerConfig  # noqa: E402
from spillgate.engines.llamacpp.tickets import LoopOutlet  # noqa: E402
from step_timeline import StepTimeline, medians  # noqa: E402

SAMPLING = SamplingParams(temperature=0.7)


def prompt_tokens(model: LlamaModel, index: int) -> list[int]:
    text = f"<|im_start|>user\n{PROMPTS[index % len(PROMPTS)]}<|im_end|>\n<|im_start|>assistant\n"
    return model.tokenize(text, add_special=True, parse_special=True)


def bare(model: LlamaModel, streams: int, tokens: int) -> dict[str, Any]:
    """Prefill every prompt in one batch, then `tokens` decode steps of all sequences."""
    prompts = [prompt_tokens(model, i) for i in range(streams)]
    # bare is llama.cpp at --n-threads: undo whatever the scheduler layer's thread choosers
    # set on the shared context (they apply their own choice again at their next decision)
    model.set_threads(model.shape.n_threads, model.shape.n_threads)
    samplers = [model.new_sampler(SAMPLING) for _ in range(streams)]
    try:
        start = time.perf_counter()
        rows = [(t, p, s, p == len(prompt) - 1) for s, prompt in enumerate(prompts)
                for p, t in enumerate(prompt)]
        if model.decode(rows) != 0:
            raise RuntimeError("prefill failed")
        ends = [i for i, row in enumerate(rows) if row[3]]
        last = [model.sample(samplers[s], ends[s]) for s in range(streams)]
        first = time.perf_counter() - start
        steps: list[float] = []
        cpu_began = time.process_time()
        for step in range(tokens - 1):
            began = time.perf_counter()
            rows = [(last[s], len(prompts[s]) + step, s, True) for s in range(streams)]
            if model.decode(rows) != 0:
                raise RuntimeError("decode failed")
            last = [model.sample(samplers[s], s) for s in range(streams)]
            steps.append(time.perf_counter() - began)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_began
    finally:
        for s in range(streams):
            model.free_sampler(samplers[s])
            model.forget(s)
    return {"layer": "bare", "streams": streams, "tokens": streams * tokens,
            "wall_s": round(wall, 3), "aggregate_tok_s": round(streams * tokens / wall, 1),
            "step_ms_p50": round(statistics.median(steps) * 1000, 2),
            "ttft_p50_s": round(first, 3),
            # CPU per decoded token: what batching saves, whatever share of the cores this
            # process got (exact with --n-threads 1; with more, spinning barriers count too)
            "cpu_ms_per_token": round(1000 * cpu / (streams * (tokens - 1)), 2)}


async def scheduled(scheduler: Scheduler | DecoderProcess, model: LlamaModel, streams: int,
                    tokens: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    async def one(index: int) -> tuple[int, float]:
        start = time.perf_counter()
        ticket = scheduler.submit(Job(prompt_tokens(model, index), tokens, SAMPLING), loop)
        ttft = 0.0
        while True:
            chunk = await ticket.next()
            ttft = ttft or time.perf_counter() - start
            if chunk.finish_reason is not None:
                return chunk.completion_tokens, ttft

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(streams)))
    wall = time.perf_counter() - start
    total = sum(n for n, _ in results)
    layer = "process" if isinstance(scheduler, DecoderProcess) else "scheduler"
    return {"layer": layer, "streams": streams, "tokens": total, "wall_s": round(wall, 3),
            "aggregate_tok_s": round(total / wall, 1), "step_ms_p50": None,
            "ttft_p50_s": round(statistics.median(t for _, t in results), 3),
            "cpu_ms_per_token": None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", help="GGUF (default: bundled SmolLM2)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument("--n-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--layers", nargs="+", default=["bare", "scheduler", "process"])
    parser.add_argument("--out", type=Path, default=REPO / "var" / "probe_engine.json")
    parser.add_argument("--timeline", type=Path, help="write every step's split here (JSON)")
    parser.add_argument("--adapt-threads", action=argparse.BooleanOptionalAction, default=False,
                        help="the scheduler layers switch to 1 thread when faster (the "
                             "engine's --adapt-threads; off by default there too)")
    args = parser.parse_args()
    top = max(args.levels)
    shape = ContextShape(n_ctx=1024, n_seq=top, n_batch=512 + top, n_threads=args.n_threads)
    path = Path(args.model_path or bundled_gguf())
    model = LlamaModel(path, shape)
    config = SchedulerConfig(max_batch=top, max_queue=64, adapt_threads=args.adapt_threads)
    outlet = LoopOutlet()
    timeline = StepTimeline()
    if args.timeline:
        for name in ("decode", "sample", "piece"):
            timeline.wrap(model, name)
        for name in ("send", "settle"):
            timeline.wrap(outlet, name)
    scheduler = Scheduler(model, EngineMetrics(queue_capacity=64, max_batch=top), config,
                          outlet=outlet)
    scheduler.start()
    decoder = DecoderProcess(DecoderSpec(path, shape, config), handoff=False)
    if "process" in args.layers:
        decoder.start()
    rows: list[dict[str, Any]] = []
    steps: dict[str, list[dict[str, float]]] = {}

    def stamped(run: Callable[..., dict[str, Any]], *run_args: Any) -> dict[str, Any]:
        timeline.start()
        row = run(*run_args)
        taken = timeline.steps()
        if args.timeline:
            steps[f"{row['layer']}/{row['streams']}"] = taken
            row["timeline_p50_ms"] = medians(taken)
        return row

    try:
        bare(model, 1, 8)  # warm-up
        for streams in args.levels:
            if "bare" in args.layers:
                rows.append(stamped(bare, model, streams, args.tokens))
            if "scheduler" in args.layers:
                rows.append(stamped(asyncio.run, scheduled(scheduler, model, streams,
                                                           args.tokens)))
            if "process" in args.layers:
                rows.append(asyncio.run(scheduled(decoder, model, streams, args.tokens)))
    finally:
        decoder.stop()
        scheduler.stop()
        model.close()
    print(f"{'layer':>9} {'streams':>7} {'tokens':>6} {'agg tok/s':>9} {'x one':>6} "
          f"{'step ms':>7} {'ttft p50':>8} {'cpu ms/tok':>10}")
    for row in rows:
        one = next(r for r in rows if r["layer"] == row["layer"])
        row["ratio_vs_one"] = round(row["aggregate_tok_s"] / one["aggregate_tok_s"], 2)
        print(f"{row['layer']:>9} {row['streams']:>7} {row['tokens']:>6} "
              f"{row['aggregate_tok_s']:>9} {row['ratio_vs_one']:>6} "
              f"{row['step_ms_p50'] or '-':>7} {row['ttft_p50_s']:>8} "
              f"{row['cpu_ms_per_token'] or '-':>10}")
    print_timeline(rows)
    if args.timeline:
        args.timeline.parent.mkdir(parents=True, exist_ok=True)
        args.timeline.write_text(json.dumps(steps, indent=1))
        print(f"wrote {args.timeline}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n_threads": args.n_threads, "tokens": args.tokens,
                                    "cpu_count": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


def print_timeline(rows: list[dict[str, Any]]) -> None:
    """Median ms per step of each part of it, for the rows that were stamped."""
    stamped = [row for row in rows if "timeline_p50_ms" in row]
    if not stamped:
        return
    keys = list(stamped[0]["timeline_p50_ms"])
    print(f"{'layer':>9} {'streams':>7} " + " ".join(f"{key:>8}" for key in keys)
          + "   (median ms per step)")
    for row in stamped:
        split = row["timeline_p50_ms"]
        print(f"{row['layer']:>9} {row['streams']:>7} "
              + " ".join(f"{split[key] if split[key] is not None else '-':>8}" for key in keys))


if __name__ == "__main__":
    raise SystemExit(main())
