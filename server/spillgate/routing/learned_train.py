"""Fit a learned dispatcher on labelled rows `{prompt, weak_ok, strong_ok}`: pure numpy.

Logistic regression by Newton's method with an L2 penalty on the standardised features: a
few hundred features and some thousands of rows converge in a dozen steps, deterministic, in
well under a second, with no dependency beyond numpy (scikit-learn's LogisticRegression
would fit the same model with SciPy, tens of MB more of install, for no measured gain).

Targets (chosen by `target`), measured on held-out MMLU subjects in docs/routing-eval.md:
- `weak_fails_strong_ok`: the paid model would fix a wrong local answer (the routing gain);
- `weak_fails`: the local answer is wrong (more positives, a noisier proxy of the gain).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from spillgate.routing.learned import Embed, Floats, LearnedRouter
from spillgate.routing.learned_features import STRUCTURAL

Target = Literal["weak_fails_strong_ok", "weak_fails"]
TARGETS: Final[dict[Target, Callable[[Floats, Floats], Floats]]] = {
    "weak_fails_strong_ok": lambda weak, strong: (1.0 - weak) * strong,
    "weak_fails": lambda weak, strong: 1.0 - weak,
}
QUANTILE_POINTS: Final = 1001  # paid shares calibrated to 0.1 %
_NEWTON_STEPS: Final = 50


@dataclass(frozen=True, slots=True)
class Labelled:
    prompts: list[str]
    weak_ok: Floats
    strong_ok: Floats


@dataclass(frozen=True, slots=True)
class TrainOptions:
    target: Target = "weak_fails_strong_ok"
    l2: float = 10_000.0  # strong: the router must carry over to topics it never saw
    use_embedding: bool = True
    structural: tuple[str, ...] = tuple(STRUCTURAL)


def train(
    data: Labelled, options: TrainOptions, *, embed: Embed | None, embedder_id: str | None,
    data_sha256: str,
) -> LearnedRouter:
    if len(data.prompts) < 10:
        raise ValueError("need at least 10 labelled rows to train a router")
    target = TARGETS[options.target](data.weak_ok, data.strong_ok)
    if target.min() == target.max():
        raise ValueError(f"every row has the same `{options.target}` label: nothing to learn")
    shell = LearnedRouter(
        embedder=embedder_id if options.use_embedding else None,
        structural=options.structural, mean=np.zeros(0), scale=np.zeros(0),
        weights=np.zeros(0), bias=0.0, quantiles=np.zeros(0), meta={},
    )
    raw = shell.features(data.prompts, embed if options.use_embedding else None)
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)  # a constant feature stays harmless
    weights, bias = fit_logistic((raw - mean) / scale, target, options.l2)
    fitted = LearnedRouter(
        embedder=shell.embedder, structural=options.structural, mean=mean, scale=scale,
        weights=weights, bias=bias, quantiles=np.zeros(2),
        meta={"target": options.target, "l2": options.l2, "rows": len(data.prompts),
              "data_sha256": data_sha256},
    )
    scores = fitted.scores_of(raw)
    quantiles = np.quantile(scores, np.linspace(0.0, 1.0, QUANTILE_POINTS))
    return LearnedRouter(
        embedder=fitted.embedder, structural=fitted.structural, mean=mean, scale=scale,
        weights=weights, bias=bias, quantiles=np.maximum.accumulate(quantiles),
        meta=fitted.meta,
    )


def fit_logistic(x: Floats, y: Floats, l2: float) -> tuple[Floats, float]:
    """Penalised maximum likelihood (the intercept is not penalised)."""
    rows, width = x.shape
    design = np.hstack([x, np.ones((rows, 1))])
    penalty = np.full(width + 1, l2)
    penalty[-1] = 0.0
    coef = np.zeros(width + 1)
    coef[-1] = np.log(max(y.mean(), 1e-6) / max(1.0 - y.mean(), 1e-6))
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ coef, -60.0, 60.0)))
        gradient = design.T @ (p - y) + penalty * coef
        curvature = (p * (1.0 - p))[:, None]
        hessian = design.T @ (design * curvature) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        coef -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return coef[:-1], float(coef[-1])


def subject_split(subjects: Sequence[str], seed: int, always_train: Sequence[str] = ("gsm8k",)
                  ) -> tuple[list[str], list[str]]:
    """Halve the subjects at random (seeded): (train half, held-out half). `always_train`
    subjects go to the training half and are not counted in the halving."""
    pool = sorted(set(subjects) - set(always_train))
    order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])
