#!/usr/bin/env python3
"""What the engine's weight type costs in quality and buys in batching, side by side.

llama.cpp's CPU backend has fast batched kernels (llamafile's tinyBLAS, the AVX2/AVX-512
"repack" layouts) for some weight types only: Q4_0, IQ4_NL and Q8_0 among them, not the
bundled model's Q4_1, which decodes four sequences with one generic dot product per row and
column. This script requantizes the bundled GGUF into each candidate type (llama.cpp's own
quantizer, `allow_requantize`: from the Q4_1 values, the only weights we ship), then measures
  - quality: perplexity of each file on fixed texts found on any checkout (this README, a
    module of Python's standard library, Python's licence), lower is better;
  - speed: bare llama.cpp (scripts/probe_engine.py's `bare` layer: one llama_decode per step,
    C sampling, no HTTP) at 1 and 4 sequences, rounds interleaved across types so the
    machine's drift hits them alike; medians.

    .venv/bin/python scripts/weights_tradeoff.py [--types q4_1 bf16 f16 q8_0 q4_0 q5_0 iq4_nl]
        [--rounds 5] [--tokens 48] [--out var/weights_tradeoff.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import sysconfig
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_engine import bundled_gguf  # noqa: E402
from probe_engine import bare  # noqa: E402
from spillgate.engines.llamacpp import weights  # noqa: E402
from spillgate.engines.llamacpp.model import ContextShape, LlamaModel  # noqa: E402

TYPES = ("q4_1", *weights.FILE_TYPES)  # q4_1: the bundled file as it is
STDLIB = Path(sysconfig.get_paths()["stdlib"])
TEXTS = {"README": (REPO / "README.md", 2000), "stdlib": (STDLIB / "asyncio" / "tasks.py", 0),
         "licence": (STDLIB / "LICENSE.txt", 0)}
TEXT_CHARS = 7000


def requantized(source: Path, kind: str, folder: Path) -> Path:
    """`source` in weight type `kind`, as the engine's `--weights` makes it (the bundled
    file itself for its own type)."""
    return weights.prepared(source, weights.AS_IS if kind == "q4_1" else kind, folder)


def perplexity(path: Path, text: str, n_ctx: int = 1024) -> float:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                          n_threads=2)
    try:
        tokens = llm.tokenize(text.encode(), add_bos=False)[: n_ctx - 1]
        llm.reset()
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nll = -float(np.mean([logp[i, tokens[i + 1]] for i in range(len(tokens) - 1)]))
        return math.exp(nll)
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+",
                        default=["q4_1", "bf16", "f16", "q8_0", "q4_0", "q5_0", "iq4_nl"],
                        choices=TYPES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "weights_tradeoff.json")
    args = parser.parse_args()
    source = Path(bundled_gguf())
    paths = {kind: requantized(source, kind, REPO / "var" / "weights") for kind in args.types}
    texts = {name: path.read_text(errors="replace")[skip:skip + TEXT_CHARS]
             for name, (path, skip) in TEXTS.items() if path.exists()}
    results: dict[str, Any] = {kind: {"size_mb": round(p.stat().st_size / 2**20, 1),
                                      "perplexity": {n: round(perplexity(p, t), 3)
                                                     for n, t in texts.items()}}
                               for kind, p in paths.items()}
    shape = ContextShape(n_ctx=1024, n_seq=4, n_batch=516, n_threads=2)
    models = {kind: LlamaModel(p, shape) for kind, p in paths.items()}
    speed: dict[str, dict[int, list[float]]] = {k: {1: [], 4: []} for k in models}
    for _ in range(args.rounds):
        for kind, model in models.items():
            for streams in (1, 4):
                speed[kind][streams].append(bare(model, streams, args.tokens)["aggregate_tok_s"])
    for kind, model in models.items():
        model.close()
        one, four = (statistics.median(speed[kind][n]) for n in (1, 4))
        results[kind].update({"tok_s_1": one, "tok_s_4": four, "x4_over_1": round(four / one, 2),
                              "rounds": speed[kind]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # The build decides which kernels run (AVX2 only, AVX-512, BF16): say which one this was.
    build = (llama_cpp.llama_print_system_info() or b"").decode().strip()
    args.out.write_text(json.dumps({**results, "llama_system_info": build}, indent=2))
    print(render(results))
    print(f"llama.cpp build: {build}")
    print(f"\nwritten to {args.out}")


def render(results: dict[str, Any]) -> str:
    names = list(next(iter(results.values()))["perplexity"])
    lines = ["| weights | MB | perplexity " + " / ".join(names) + " | tok/s 1 seq | tok/s 4 seq "
             "| 4 over 1 |", "|---|---|---|---|---|---|"]
    for kind, r in results.items():
        ppl = " / ".join(f"{r['perplexity'][n]:.2f}" for n in names)
        lines.append(f"| {kind} | {r['size_mb']} | {ppl} | {r['tok_s_1']:.1f} | "
                     f"{r['tok_s_4']:.1f} | {r['x4_over_1']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
