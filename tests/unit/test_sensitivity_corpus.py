"""The detector against the generated corpus (scripts/sensitivity_corpus.py).

Ground truth comes from the generator (Luhn-built cards, mod-97-checked IBANs, libphonenumber-
validated phones …), never from the detector, so these floors can fail.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from spillgate.routing.sensitivity import ALL_CLASSES, SensitivityDetector

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sensitivity_corpus.py"
FLOOR = 0.95


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sensitivity_corpus", SCRIPT)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sensitivity_corpus", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module")
def corpus(generator: ModuleType) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = generator.generate_corpus()
    return cases


@pytest.fixture(scope="module")
def outcomes(corpus: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Per class: tp / fp / fn counts of the detector over the full corpus."""
    detector = SensitivityDetector()
    counts = {cls: Counter[str]() for cls in ALL_CLASSES}
    for case in corpus:
        found, expected = detector.scan([case["text"]]), set(case["classes"])
        for cls, c in counts.items():
            if cls in found and cls in expected:
                c["tp"] += 1
            elif cls in found:
                c["fp"] += 1
            elif cls in expected:
                c["fn"] += 1
    return counts


def test_corpus_is_large_balanced_and_labelled(corpus: list[dict[str, Any]]) -> None:
    assert len(corpus) >= 1000
    negatives = sum(1 for case in corpus if not case["classes"])
    assert negatives / len(corpus) >= 0.40
    support = Counter(cls for case in corpus for cls in case["classes"])
    assert set(support) == ALL_CLASSES
    assert min(support.values()) >= 80


def test_corpus_is_deterministic(generator: ModuleType, corpus: list[dict[str, Any]]) -> None:
    again = generator.generate_corpus(scale=0.1)
    assert again == generator.generate_corpus(scale=0.1)
    assert generator.generate_corpus(scale=0.1, seed=99) != again


@pytest.mark.parametrize("cls", sorted(ALL_CLASSES))
def test_recall_floor(outcomes: dict[str, Counter[str]], cls: str) -> None:
    c = outcomes[cls]
    recall = c["tp"] / (c["tp"] + c["fn"])
    assert recall >= FLOOR, f"{cls}: recall {recall:.3f} ({c['fn']} missed)"


@pytest.mark.parametrize("cls", sorted(ALL_CLASSES))
def test_precision_floor(outcomes: dict[str, Counter[str]], cls: str) -> None:
    c = outcomes[cls]
    precision = c["tp"] / max(1, c["tp"] + c["fp"])
    assert precision >= FLOOR, f"{cls}: precision {precision:.3f} ({c['fp']} false hits)"


def test_hard_negatives_are_overwhelmingly_clean(corpus: list[dict[str, Any]]) -> None:
    detector = SensitivityDetector()
    negatives = [case["text"] for case in corpus if not case["classes"]]
    flagged = sum(1 for text in negatives if detector.scan([text]))
    assert flagged / len(negatives) <= 1 - FLOOR
