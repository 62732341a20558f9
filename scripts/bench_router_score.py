"""Time to score one prompt with a learned dispatcher, as the request path does it
(`Dispatcher.score`: local embedding of the prompt's head + structural features + the
logistic model), one prompt at a time.

    .venv/bin/python scripts/bench_router_score.py --router var/router.json \
        [--data ../shared/data/routing-evals.jsonl] [--runs 2000]

Cases: the shared file's prompts in file order (GSM8K questions and MMLU items, 100 to
5,000 characters), and one 512-character prompt (the longest scored inline on the event
loop; longer ones go to a worker thread). Prints p50/p99/max in milliseconds and writes
var/bench_router.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from spillgate.embeddings import load_local_embedder
from spillgate.learned_file import load_router, read_rows
from spillgate.routing.learned import Dispatcher
from spillgate.steering import SCORE_INLINE_CHARS

ROOT = Path(__file__).resolve().parents[1]


def timed(dispatcher: Dispatcher, texts: list[str]) -> dict[str, float]:
    took = []
    for text in texts:
        began = time.perf_counter()
        dispatcher.score(text)
        took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return {"runs": len(took), "p50_ms": round(statistics.median(took), 4),
            "p99_ms": round(took[int(0.99 * (len(took) - 1))], 4),
            "max_ms": round(took[-1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--router", type=Path, required=True)
    parser.add_argument("--data", type=Path,
                        default=ROOT.parent / "shared/data/routing-evals.jsonl")
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    router = load_router(args.router)
    embed = load_local_embedder().embed if router.embedder else None
    dispatcher = Dispatcher(router, router.threshold_for_share(0.3), embed)
    prompts = read_rows(args.data).data.prompts[: args.runs]
    dispatcher.score("warm up")
    longest = ("Explain the following passage in detail. " * 200)[:SCORE_INLINE_CHARS]
    results = {
        "machine": platform.processor() or platform.machine(),
        "shared_file_prompts": timed(dispatcher, prompts),
        "prompt_inline_max_chars": timed(dispatcher, [longest] * min(args.runs, 500)),
    }
    print(json.dumps(results, indent=2))
    (ROOT / "var").mkdir(exist_ok=True)
    (ROOT / "var" / "bench_router.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
