"""Precision/recall of the sensitivity detector on the tuning corpus and the evaluation corpus.

    .venv/bin/python scripts/eval_sensitivity.py [--scale 1.0] [--seed 1234]
        [--eval-seed 90210] [--show-errors N]

Two corpora, reported apart: `tuning` (scripts/sensitivity_corpus.py, the one the rules were
fitted to) and `evaluation` (scripts/sensitivity_eval_corpus.py: another generator, seed and
locales, every encoding, values split across messages). For each: a per-class table (support,
TP, FP, FN, precision, recall, F1), the micro overall, the request-level "any sensitive class"
line that the routing decision depends on, and the share of harmless requests kept local.
Writes the same as JSON to var/eval_sensitivity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sensitivity_corpus import DEFAULT_SEED, generate_corpus
from sensitivity_eval_corpus import DEFAULT_EVAL_SEED, generate_eval_corpus
from spillgate.routing.sensitivity import ALL_CLASSES, SensitivityDetector

ROOT = Path(__file__).resolve().parents[1]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def _metrics(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "support": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


Case = dict[str, Any]


def texts_of(case: Case) -> list[str]:
    """The tuning corpus has one `text` per case, the evaluation corpus a list of `texts`."""
    return list(case["texts"]) if "texts" in case else [case["text"]]


def evaluate(
    cases: list[Case], detector: SensitivityDetector
) -> tuple[dict[str, dict[str, float | int]], list[tuple[Case, list[str]]]]:
    """Per-class, overall (micro) and any-class metrics, plus the misclassified cases."""
    counts = {c: [0, 0, 0] for c in sorted(ALL_CLASSES)}
    any_counts = [0, 0, 0]
    errors: list[tuple[Case, list[str]]] = []
    for case in cases:
        predicted = detector.scan(texts_of(case))
        expected = set(case["classes"])
        for cls, slot in counts.items():
            if cls in predicted and cls in expected:
                slot[0] += 1
            elif cls in predicted:
                slot[1] += 1
            elif cls in expected:
                slot[2] += 1
        flagged, sensitive = bool(predicted), bool(expected)
        if flagged or sensitive:
            any_counts[0 if flagged and sensitive else 1 if flagged else 2] += 1
        if predicted != expected:
            errors.append((case, sorted(predicted)))
    table = {cls: _metrics(*slot) for cls, slot in counts.items()}
    table["overall"] = _metrics(*(sum(s[i] for s in counts.values()) for i in range(3)))
    table["any_sensitive"] = _metrics(*any_counts)
    return table, errors


def print_table(table: dict[str, dict[str, float | int]]) -> None:
    print(
        f"{'class':<14}{'support':>8}{'tp':>6}{'fp':>5}{'fn':>5}"
        f"{'precision':>11}{'recall':>8}{'f1':>8}"
    )
    for cls, m in table.items():
        print(
            f"{cls:<14}{m['support']:>8}{m['tp']:>6}{m['fp']:>5}{m['fn']:>5}"
            f"{m['precision']:>11.4f}{m['recall']:>8.4f}{m['f1']:>8.4f}"
        )


def report(name: str, cases: list[Case], detector: SensitivityDetector, seed: int,
           show_errors: int) -> dict[str, Any]:
    started = time.perf_counter()
    table, errors = evaluate(cases, detector)
    elapsed = time.perf_counter() - started
    negatives = [c for c in cases if not c["classes"]]
    kept_local = sum(1 for c in negatives if detector.scan(texts_of(c)))
    share = kept_local / len(negatives) if negatives else 0.0
    print(
        f"\n{name} corpus: {len(cases)} cases, {len(negatives)} harmless "
        f"({len(negatives) / len(cases):.0%}), seed {seed}; scanned in {elapsed:.2f} s"
    )
    print_table(table)
    print(f"harmless requests kept local: {kept_local}/{len(negatives)} = {share:.2%}")
    for case, predicted in errors[:show_errors]:
        print(f"  expected {case['classes']} got {predicted}: {texts_of(case)!r}")
    return {
        "corpus": {"cases": len(cases), "negatives": len(negatives), "seed": seed},
        "metrics": table,
        "harmless_kept_local": round(share, 4),
        "misclassified": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    parser.add_argument(
        "--show-errors",
        type=int,
        default=0,
        metavar="N",
        help="print up to N misclassified cases per corpus (local debugging only)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "eval_sensitivity.json")
    args = parser.parse_args()

    detector = SensitivityDetector()
    tuning: list[Case] = [dict(c) for c in generate_corpus(scale=args.scale, seed=args.seed)]
    evaluation: list[Case] = [dict(c) for c in generate_eval_corpus(args.scale, args.eval_seed)]
    result = {
        "tuning": report("tuning", tuning, detector, args.seed, args.show_errors),
        "evaluation": report("evaluation", evaluation, detector, args.eval_seed,
                             args.show_errors),
        "scale": args.scale,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
