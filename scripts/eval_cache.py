"""Calibrate the semantic cache's threshold on the tuning pairs, judge it on the evaluation pairs.

A pair is a hit when the cosine similarity of the two questions (the node's own embedder, on
`comparable_text` as the cache embeds it) is
at or above the threshold AND the guards agree (spillgate.cache.guards). The threshold chosen
is the lowest (most recall) whose precision on the tuning set is at least TARGET_PRECISION
(a margin above the 0.99 goal) with zero hits on negation, number, entity and unit swaps;
the evaluation set never influences it.

Usage: python scripts/eval_cache.py [--json docs/cache-eval.json] [--md docs/cache-eval.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from spillgate.cache.guards import agree, facts_of
from spillgate.cache.keys import comparable_text
from spillgate.embeddings import load_local_embedder

HERE = Path(__file__).resolve().parent
TARGET_PRECISION = 0.995
MUST_BE_ZERO = ("negation", "number", "entity", "unit")
GRID = [round(t, 3) for t in np.arange(0.70, 1.0001, 0.005)]


def _pairs_module() -> Any:
    spec = importlib.util.spec_from_file_location("cache_pairs", HERE / "cache_pairs.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load scripts/cache_pairs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cache_pairs"] = module
    spec.loader.exec_module(module)
    return module


def score(pairs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Similarity and guard verdict of every pair."""
    embedder = load_local_embedder()
    a = embedder.embed([comparable_text(str(p["a"])) for p in pairs])
    b = embedder.embed([comparable_text(str(p["b"])) for p in pairs])
    sims = np.einsum("ij,ij->i", a, b)
    guards = np.array([agree(facts_of(str(p["a"])), facts_of(str(p["b"]))) for p in pairs])
    return sims, guards


def judge(pairs: list[dict[str, Any]], hits: np.ndarray) -> dict[str, Any]:
    dup = np.array([bool(p["duplicate"]) for p in pairs])
    tp, fp = int((hits & dup).sum()), int((hits & ~dup).sum())
    kinds: dict[str, Any] = {}
    for kind in sorted({str(p["kind"]) for p in pairs}):
        mask = np.array([p["kind"] == kind for p in pairs])
        kinds[kind] = {"pairs": int(mask.sum()), "hits": int((hits & mask).sum()),
                       "hit_rate": round(float((hits & mask).sum() / mask.sum()), 4)}
    return {
        "pairs": len(pairs), "duplicates": int(dup.sum()), "hits": int(hits.sum()),
        "true_hits": tp, "wrong_hits": fp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / int(dup.sum()), 4) if dup.any() else None,
        "by_kind": kinds,
    }


def calibrate(pairs: list[dict[str, Any]], sims: np.ndarray, guards: np.ndarray) -> float:
    for threshold in GRID:
        result = judge(pairs, (sims >= threshold) & guards)
        precision = result["precision"] if result["precision"] is not None else 1.0
        if precision >= TARGET_PRECISION and all(
                result["by_kind"].get(k, {"hits": 0})["hits"] == 0 for k in MUST_BE_ZERO):
            return threshold
    return 1.0


def similarity_summary(pairs: list[dict[str, Any]], sims: np.ndarray) -> dict[str, Any]:
    out = {}
    for kind in sorted({str(p["kind"]) for p in pairs}):
        values = sims[np.array([p["kind"] == kind for p in pairs])]
        out[kind] = {"mean": round(float(values.mean()), 3),
                     "p10": round(float(np.percentile(values, 10)), 3),
                     "p90": round(float(np.percentile(values, 90)), 3)}
    return out


def evaluate(per_kind: int) -> dict[str, Any]:
    generator = _pairs_module()
    report: dict[str, Any] = {"embedder": load_local_embedder().model_id,
                              "target_precision": TARGET_PRECISION, "sets": {}}
    scored = {}
    for name in ("tuning", "evaluation", "holdout"):
        pairs = generator.generate(name, per_kind)
        scored[name] = (pairs, *score(pairs))
    tuning_pairs, tuning_sims, tuning_guards = scored["tuning"]
    threshold = calibrate(tuning_pairs, tuning_sims, tuning_guards)
    threshold_only = calibrate(tuning_pairs, tuning_sims, np.ones_like(tuning_guards))
    report["threshold"] = threshold
    report["threshold_without_guards"] = threshold_only
    for name, (pairs, sims, guards) in scored.items():
        report["sets"][name] = {
            "with_guards": judge(pairs, (sims >= threshold) & guards),
            "without_guards_same_threshold": judge(pairs, sims >= threshold),
            "without_guards_own_threshold": judge(pairs, sims >= threshold_only),
            "similarity": similarity_summary(pairs, sims),
        }
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Threshold calibrated on the tuning set: **{report['threshold']}** (guards on); "
             "without guards the same precision target needs "
             f"{report['threshold_without_guards']}.",
             "", "| set | mode | precision | recall | wrong hits | " + " | ".join(
                 f"{k} hits" for k in report["sets"]["tuning"]["with_guards"]["by_kind"]) + " |",
             "|---|---|---|---|---|" + "---|" * len(
                 report["sets"]["tuning"]["with_guards"]["by_kind"])]
    for name, modes in report["sets"].items():
        for mode in ("with_guards", "without_guards_same_threshold",
                     "without_guards_own_threshold"):
            r = modes[mode]
            kinds = " | ".join(f"{v['hits']}/{v['pairs']}" for v in r["by_kind"].values())
            lines.append(f"| {name} | {mode.replace('_', ' ')} | {r['precision']} | "
                         f"{r['recall']} | {r['wrong_hits']} | {kinds} |")
    lines += ["", "Cosine similarity by kind (mean, p10, p90):", ""]
    for name, modes in report["sets"].items():
        cells = ", ".join(f"{k} {v['mean']} ({v['p10']} to {v['p90']})"
                          for k, v in modes["similarity"].items())
        lines.append(f"- {name}: {cells}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--md", type=Path, default=None, help="write the results table here")
    args = parser.parse_args(argv)
    report = evaluate(args.per_kind)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
