#!/usr/bin/env python3
"""What the order of a batch's rows costs llama.cpp: one decode step of N sequences, by order.

The engine gives every sequence its own KV stream (`kv_unified = False`). llama.cpp then splits
a batch into ubatches that take sequences only in increasing, consecutive ids, and each ubatch
is one more pass over the weights. This script fills 4 sequences with `--context` tokens each,
then times one-token-per-sequence decode steps with the rows:
  sorted      slots 0,1,2,3 (what the scheduler sends)
  reversed    3,2,1,0 (admission order when slots came off a stack: four passes)
  gap         0,1,3 (a finished sequence left a hole: two passes)
  three       0,1,2 (the gap's work without the hole)
  one         0 (a single stream)
and, for comparison, the same on one shared KV buffer (`kv_unified = True`), where llama.cpp
batches any order in one pass but every row attends over every sequence's cells.
Steps alternate between orders so the machine's drift hits them alike; medians.

    .venv/bin/python scripts/batch_order.py [--weights as-is iq4_nl] [--context 130 1500]
        [--steps 30] [--out var/batch_order.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import llama_cpp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_engine import bundled_gguf  # noqa: E402
from spillgate.engines.llamacpp import weights  # noqa: E402
from spillgate.engines.llamacpp.model import ContextShape, LlamaModel  # noqa: E402

_QUIET = llama_cpp.llama_log_callback(lambda _level, _text, _user: None)  # referenced: not GCed
ORDERS = {"sorted": [0, 1, 2, 3], "reversed": [3, 2, 1, 0], "gap": [0, 1, 3],
          "three": [0, 1, 2], "one": [0]}
SEQUENCES = 4


class _Model(LlamaModel):
    """LlamaModel with the KV layout chosen here (the engine always uses separate streams)."""

    unified = False

    def _new_context(self, shape: ContextShape) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = shape.n_ctx * shape.n_seq
        params.n_seq_max = shape.n_seq
        params.kv_unified = self.unified
        params.n_batch = params.n_ubatch = shape.n_batch
        params.n_threads = params.n_threads_batch = shape.n_threads
        params.no_perf = True
        return llama_cpp.llama_init_from_model(self._model, params)


def _fill(model: LlamaModel, context: int) -> None:
    """`context` tokens in every sequence (their values do not matter to the timing)."""
    for seq in range(SEQUENCES):
        for start in range(0, context, 256):
            rows = [(100 + p % 50, p, seq, False) for p in range(start, min(context, start + 256))]
            if model.decode(rows) != 0:
                raise RuntimeError("prefill failed")


def _steps(model: LlamaModel, context: int, steps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in ORDERS}
    for _ in range(steps):
        for name, order in ORDERS.items():
            began = time.perf_counter()
            if model.decode([(200, context, seq, True) for seq in order]) != 0:
                raise RuntimeError("decode failed")
            times[name].append(time.perf_counter() - began)
            for seq in order:  # back to `context` cells (positions must follow on)
                llama_cpp.llama_memory_seq_rm(model._memory, seq, context, -1)
    return {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}


def measure(path: Path, context: int, unified: bool, steps: int, threads: int) -> dict[str, float]:
    model_type = type("M", (_Model,), {"unified": unified})
    shape = ContextShape(n_ctx=256 * ((context + steps) // 256 + 2), n_seq=SEQUENCES, n_batch=256,
                         n_threads=threads)
    with model_type(path, shape) as model:
        _fill(model, context)
        return _steps(model, context, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["as-is", "iq4_nl"],
                        choices=weights.CHOICES)
    parser.add_argument("--context", type=int, nargs="+", default=[130, 1500])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "batch_order.json")
    args = parser.parse_args()
    llama_cpp.llama_log_set(_QUIET, None)
    source = Path(bundled_gguf())
    rows = []
    for kind in args.weights:
        path = weights.prepared(source, kind, REPO / "var" / "weights")
        for context in args.context:
            for unified in (False, True):
                ms = measure(path, context, unified, args.steps, args.threads)
                rows.append({"weights": kind, "context": context,
                             "kv": "shared" if unified else "per sequence", "step_ms": ms})
    print("| weights | context | KV | " + " | ".join(ORDERS) + " | reversed / sorted |")
    print("|---|---|---|" + "---|" * len(ORDERS) + "---|")
    for r in rows:
        ms = r["step_ms"]
        cells = " | ".join(f"{ms[name]:.2f}" for name in ORDERS)
        print(f"| {r['weights']} | {r['context']} | {r['kv']} | {cells} | "
              f"{ms['reversed'] / ms['sorted']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
