"""`spillgate eval cascade` figures: how well a draft's confidence tells right from wrong.

Pure: graded drafts in, figures out (the runner, cli/eval_cascade.py, asks the local model).
For each confidence signal (routing.cascade):

- AUROC: the probability that a right draft has a higher confidence than a wrong one (ties
  count half; 0.5 is no better than a coin, 1.0 separates them perfectly);
- per threshold — chosen at the deciles of the signal over the set, so the escalation rate
  walks from 0% to 90% — the escalation rate, the accuracy of the drafts kept, and the
  accuracy of the cascade if the paid model answers every escalated question right (an upper
  bound; the real figure needs the paid model's answers too).

Grading is strict and simple (the set is built for it, scripts/cascade_eval_set.py): numbers
by the first integer in the answer (after its last "=", if any), yes/no by the first yes or
no, a city by its name among the answer's first eight words or so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from spillgate.routing.cascade import Signal, signal_of

SIGNALS: tuple[Signal, ...] = ("mean_logprob", "min_logprob", "first_k_logprob")
_INT = re.compile(r"-?\d+")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True, slots=True)
class Graded:
    id: str
    kind: str
    correct: bool
    logprobs: tuple[float, ...]


def grade(kind: str, gold: str, answer: str) -> bool:
    text = answer.strip().lower()
    if kind in ("arithmetic", "unit"):  # "5 + 11 = 16": the number after the last "="
        match = _INT.search(text.replace(",", "").rpartition("=")[2])
        return match is not None and match[0] == gold
    if kind == "yes_no":
        first = next((w for w in _WORD.findall(text) if w in ("yes", "no")), None)
        return first == gold
    head = " ".join(text.split()[: len(gold.split()) + 7])  # "The capital of X is Y."
    return gold.lower() in head


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Mann-Whitney U / (positives x negatives), ties by average rank; None if one class
    is empty."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(r for r, good in zip(ranks, labels, strict=True) if good)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def signal_values(items: Sequence[Graded], signal: Signal, first_k: int) -> list[float]:
    """Each draft's confidence; a draft without tokens gets -inf (always escalated)."""
    values = [signal_of(item.logprobs, signal, first_k) for item in items]
    return [-math.inf if v is None else v for v in values]


def sweep(values: Sequence[float], correct: Sequence[bool]) -> list[dict[str, Any]]:
    ordered = sorted(values)
    thresholds = sorted({ordered[min(len(ordered) - 1, len(ordered) * q // 10)]
                         for q in range(10)} - {-math.inf})
    rows = []
    for threshold in thresholds:
        kept = [good for value, good in zip(values, correct, strict=True) if value >= threshold]
        escalated = len(values) - len(kept)
        rows.append({
            "threshold": threshold,
            "escalation_rate": escalated / len(values),
            "kept": len(kept),
            "kept_accuracy": sum(kept) / len(kept) if kept else None,
            "cascade_accuracy_if_paid_right": (sum(kept) + escalated) / len(values),
        })
    return rows


def evaluate(items: Sequence[Graded], first_k: int = 8) -> dict[str, Any]:
    correct = [item.correct for item in items]
    by_kind: dict[str, list[bool]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item.correct)
    signals = {}
    for signal in SIGNALS:
        values = signal_values(items, signal, first_k)
        finite = [v if math.isfinite(v) else -1e9 for v in values]
        signals[signal] = {"auroc": auroc(finite, correct), "thresholds": sweep(values, correct)}
    return {
        "items": len(items),
        "draft_accuracy": sum(correct) / len(items) if items else None,
        "accuracy_by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "without_logprobs": sum(1 for item in items if not item.logprobs),
        "first_k": first_k,
        "signals": signals,
    }


def render(result: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n"
    lines = [
        "# Cascade evaluation", "",
        f"{result['items']} questions; the local draft is right on "
        f"{_pct(result['draft_accuracy'])} ({', '.join(f'{k} {_pct(v)}' for k, v in result['accuracy_by_kind'].items())}); "  # noqa: E501
        f"{result['without_logprobs']} drafts came without log-probabilities, "
        f"{result.get('unanswered', 0)} questions got no answer in time.", "",
    ]
    for signal, figures in result["signals"].items():
        auc = figures["auroc"]
        lines += [f"## {signal}: AUROC {'-' if auc is None else f'{auc:.3f}'}", "",
                  "| threshold | escalation rate | kept | kept accuracy | "
                  "cascade accuracy if paid right |", "|---|---|---|---|---|"]
        lines += [f"| {row['threshold']:.4f} | {_pct(row['escalation_rate'])} | {row['kept']} "
                  f"| {_pct(row['kept_accuracy'])} | "
                  f"{_pct(row['cascade_accuracy_if_paid_right'])} |"
                  for row in figures["thresholds"]]
        lines.append("")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
