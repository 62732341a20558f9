"""APGR, CPT and the curve, checked against a hand computation on tiny tables."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.reports.routing_eval import curve, evaluate, render


def hand_pgr(scores: list[float], weak: list[int], strong: list[int]) -> list[Fraction]:
    """PGR after paying for k prompts, averaged over every order that sorts the scores
    descending (ties broken every possible way), by direct assignment prompt by prompt."""
    n = len(scores)
    orders = [p for p in itertools.permutations(range(n))
              if all(scores[p[i]] >= scores[p[i + 1]] for i in range(n - 1))]
    gap = Fraction(sum(strong) - sum(weak), n)
    pgr = []
    for k in range(n + 1):
        total = Fraction(0)
        for order in orders:
            paid = set(order[:k])
            quality = Fraction(sum(strong[i] if i in paid else weak[i] for i in range(n)), n)
            total += (quality - Fraction(sum(weak), n)) / gap
        pgr.append(total / len(orders))
    return pgr


def trapezoid(values: list[Fraction]) -> Fraction:
    n = len(values) - 1
    return sum(((values[i] + values[i + 1]) / 2 for i in range(n)), Fraction(0)) / n


def test_apgr_of_a_four_prompt_table_by_hand() -> None:
    # Prompt 0: the paid model fixes it; 1: both fail; 2: both right; 3: paid fixes it.
    weak, strong = [0, 0, 1, 0], [1, 0, 1, 1]
    scores = [0.9, 0.8, 0.1, 0.5]  # paid first: 0 (+1), 1 (0), 3 (+1), 2 (0)
    # PGR after k paid: 0, 1/2, 1/2, 1, 1 → area (1/4)(1/4 + 1/2 + 3/4 + 1) = 5/8.
    assert trapezoid(hand_pgr(scores, weak, strong)) == Fraction(5, 8)
    assert curve(np.array(scores), np.array(weak, float), np.array(strong, float)).apgr == \
        pytest.approx(5 / 8)


def test_tied_scores_count_as_random_order_and_a_constant_score_is_one_half() -> None:
    weak, strong = np.array([0, 1, 0, 0, 1], float), np.array([1, 1, 1, 0, 1], float)
    assert curve(np.zeros(5), weak, strong).apgr == pytest.approx(0.5)
    scores = [1.0, 1.0, 0.0, 0.0, 0.0]
    expected = trapezoid(hand_pgr(scores, weak.astype(int).tolist(),
                                  strong.astype(int).tolist()))
    assert curve(np.array(scores), weak, strong).apgr == pytest.approx(float(expected))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.booleans()), min_size=2,
                max_size=6))
def test_the_curve_matches_the_hand_method_on_any_small_table(
        rows: list[tuple[int, bool, bool]]) -> None:
    scores = [float(s) for s, _, _ in rows]
    weak, strong = [int(w) for _, w, _ in rows], [int(s) for _, _, s in rows]
    if sum(strong) <= sum(weak):
        with pytest.raises(ValueError, match="must beat"):
            curve(np.array(scores), np.array(weak, float), np.array(strong, float))
        return
    got = curve(np.array(scores), np.array(weak, float), np.array(strong, float))
    assert got.pgr.tolist() == pytest.approx([float(v) for v in hand_pgr(scores, weak, strong)])


def test_cpt_is_the_least_paid_share_reaching_the_level() -> None:
    # Ten prompts, the paid model fixes four; a perfect router pays for those four first.
    weak = np.array([0] * 4 + [1] * 6, float)
    strong = np.ones(10)
    perfect = curve(np.arange(10, 0, -1, dtype=float), weak, strong)
    assert perfect.cpt(0.5) == pytest.approx(0.2)  # 2 of 10 recover half the gap
    assert perfect.cpt(0.95) == pytest.approx(0.38)  # 3.8 prompts: 95% of 4 (interpolated)
    assert perfect.apgr == pytest.approx(1 - 0.4 / 2)  # rises to 1 by 40%, then flat
    worst = curve(np.arange(10, dtype=float), weak, strong)  # the four fixable ones last
    assert worst.cpt(0.5) == pytest.approx(0.8)


def test_the_report_has_baselines_and_renders_every_format() -> None:
    rng = np.random.default_rng(3)
    weak = rng.random(200) < 0.6
    strong = weak | (rng.random(200) < 0.5)
    prompts = [("x" * int(5 + 100 * rng.random())) for _ in range(200)]
    oracle = (strong & ~weak).astype(float)
    report = evaluate(oracle, prompts, weak.astype(float), strong.astype(float), seed=7)
    assert set(report["methods"]) == {"router", "random", "prompt_length"}
    # The oracle pays for the fixable share g first: PGR rises linearly to 1 at g.
    assert report["methods"]["router"]["apgr"] == pytest.approx(1 - oracle.mean() / 2, abs=1e-4)
    assert abs(report["methods"]["random"]["apgr"] - 0.5) < 0.05
    assert report["beats_random_at_every_share"] is True
    assert report == evaluate(oracle, prompts, weak.astype(float), strong.astype(float), seed=7)
    shares = [p["paid_share"] for p in report["curve"]]
    assert shares[0] == 0.0 and shares[-1] == 1.0 and shares == sorted(shares)
    assert "| router |" in render(report, "md")
    assert render(report, "html").startswith("<!doctype html>")
    assert '"apgr"' in render(report, "json")
