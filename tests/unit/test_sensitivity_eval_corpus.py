"""The detector against the evaluation corpus (scripts/sensitivity_eval_corpus.py).

That corpus is built apart from the tuning corpus (another generator, seed and locales, every
encoding, values split across messages). The issue's bar: no sensitive request missed, and at
most 10% of the harmless ones kept local.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from spillgate.routing.sensitivity import ALL_CLASSES, SensitivityDetector

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sensitivity_eval_corpus.py"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(path.stem, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = _load(SCRIPT).generate_eval_corpus()
    return cases


@pytest.fixture(scope="module")
def detector() -> SensitivityDetector:
    return SensitivityDetector()


def test_corpus_covers_every_class_and_splits(corpus: list[dict[str, Any]]) -> None:
    classes = {cls for case in corpus for cls in case["classes"]}
    assert classes == ALL_CLASSES
    assert any(len(case["texts"]) > 1 for case in corpus)
    assert sum(1 for case in corpus if not case["classes"]) >= 500


def test_no_sensitive_case_is_missed(corpus: list[dict[str, Any]],
                                     detector: SensitivityDetector) -> None:
    missed = [case["classes"] for case in corpus
              if case["classes"] and not detector.scan(case["texts"])]
    assert missed == []


def test_each_sensitive_case_is_named_by_its_class(corpus: list[dict[str, Any]],
                                                   detector: SensitivityDetector) -> None:
    wrong = [case["classes"] for case in corpus
             if case["classes"] and not set(case["classes"]) <= detector.scan(case["texts"])]
    assert wrong == []


def test_at_most_a_tenth_of_harmless_requests_stay_local(
    corpus: list[dict[str, Any]], detector: SensitivityDetector
) -> None:
    harmless = [case["texts"] for case in corpus if not case["classes"]]
    kept = sum(1 for texts in harmless if detector.scan(texts))
    assert kept / len(harmless) <= 0.10
