"""Offline evaluation of a routing score on labelled rows `{weak_ok, strong_ok}`.

Sending the top `share` of prompts by score to the strong (paid) model and the rest to the
weak (local) one gives a quality between the weak model's and the strong model's. The
metrics are those of RouteLLM (Ong et al., "RouteLLM: Learning to Route LLMs with Preference
Data", 2024, section 5.1):
- PGR(share) = (quality(share) - weak) / (strong - weak), the performance gap recovered;
- APGR = the area under PGR over paid shares in [0, 1] (random routing: 0.5);
- CPT(x%) = the least paid share whose PGR reaches x% (call-performance threshold).

Prompts with equal scores are ordered by chance in practice; the curve takes the expected
value over that order (each tied group's gain is spread evenly), so a constant score is
exactly the random baseline and no result depends on input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
GRID: Final = tuple(i / 20 for i in range(21))  # paid shares shown in the tables
CPT_LEVELS: Final = (0.5, 0.8, 0.95)
RANDOM_DRAWS: Final = 20


@dataclass(frozen=True, slots=True)
class Curve:
    pgr: Floats  # PGR after sending 0, 1, …, n prompts to the paid model

    @property
    def apgr(self) -> float:
        n = len(self.pgr) - 1
        return float(np.sum((self.pgr[1:] + self.pgr[:-1]) / 2.0) / n)

    def at(self, share: float) -> float:
        n = len(self.pgr) - 1
        return float(np.interp(share * n, np.arange(n + 1), self.pgr))

    def cpt(self, level: float) -> float | None:
        """Least paid share with PGR >= level (interpolated), None if never reached."""
        reached = np.nonzero(self.pgr >= level - 1e-12)[0]
        if not len(reached):
            return None
        k = int(reached[0])
        if k == 0:
            return 0.0
        lo, hi = self.pgr[k - 1], self.pgr[k]
        frac = (level - lo) / (hi - lo) if hi > lo else 1.0
        return float((k - 1 + frac) / (len(self.pgr) - 1))


def curve(scores: Floats, weak_ok: Floats, strong_ok: Floats) -> Curve:
    """PGR at every paid count, highest scores paid first, ties spread evenly."""
    gain = np.asarray(strong_ok, dtype=np.float64) - np.asarray(weak_ok, dtype=np.float64)
    total = float(gain.sum())
    if len(gain) == 0 or total <= 0:
        raise ValueError("the strong model must beat the weak one on these rows "
                         "(the quality gap is what routing recovers)")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked, gains = np.asarray(scores)[order], gain[order]
    _, starts, counts = np.unique(-ranked, return_index=True, return_counts=True)
    spread = np.repeat(np.add.reduceat(gains, starts) / counts, counts)
    return Curve(np.concatenate([[0.0], np.cumsum(spread)]) / total)


def random_curve(n_weak: Floats, strong: Floats, seed: int) -> Curve:
    """The mean PGR of RANDOM_DRAWS seeded random orders."""
    rng = np.random.default_rng(seed)
    draws = [curve(rng.random(len(n_weak)), n_weak, strong).pgr for _ in range(RANDOM_DRAWS)]
    return Curve(np.mean(draws, axis=0))


def evaluate(scores: Floats, prompts: Sequence[str], weak_ok: Floats, strong_ok: Floats,
             seed: int, label: str = "router") -> dict[str, Any]:
    """The report: APGR, CPT and the quality/paid-share curve of the router and baselines."""
    weak_q, strong_q = float(np.mean(weak_ok)), float(np.mean(strong_ok))
    curves = {
        label: curve(scores, weak_ok, strong_ok),
        "random": random_curve(weak_ok, strong_ok, seed),
        "prompt_length": curve(np.array([len(p) for p in prompts], dtype=np.float64),
                               weak_ok, strong_ok),
    }
    gap = strong_q - weak_q
    router = curves[label]
    inner = [s for s in GRID if 0.0 < s < 1.0]
    return {
        "rows": len(prompts), "seed": seed, "weak_quality": round(weak_q, 6),
        "strong_quality": round(strong_q, 6),
        "methods": {name: {
            "apgr": round(c.apgr, 4),
            "cpt": {f"{int(level * 100)}%": _maybe(c.cpt(level)) for level in CPT_LEVELS},
        } for name, c in curves.items()},
        "curve": [{"paid_share": share, **{
            name: {"quality": round(weak_q + gap * c.at(share), 4), "pgr": round(c.at(share), 4)}
            for name, c in curves.items()}} for share in GRID],
        "beats_random_at_every_share": all(router.at(s) > s for s in inner),
        "router_label": label,
    }


def _maybe(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps(report, indent=2) + "\n"
    if fmt == "md":
        return _markdown(report)
    if fmt == "html":
        return _html(report)
    raise ValueError(f"unknown format {fmt!r}: json, md or html")


def _summary(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "APGR", "CPT(50%)", "CPT(80%)", "CPT(95%)"]
    rows = [[name, f"{m['apgr']:.3f}", *(_pct(m["cpt"][k]) for k in ("50%", "80%", "95%"))]
            for name, m in report["methods"].items()]
    return headers, rows


def _curve_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = list(report["methods"])
    headers = ["paid share", *(f"{n} quality" for n in names), *(f"{n} PGR" for n in names)]
    rows = [[_pct(p["paid_share"]), *(f"{p[n]['quality']:.3f}" for n in names),
             *(f"{p[n]['pgr']:.3f}" for n in names)] for p in report["curve"]]
    return headers, rows


def _pct(value: float | None) -> str:
    return "never" if value is None else f"{value * 100:.1f}%"


def _facts(report: dict[str, Any]) -> str:
    verdict = "yes" if report["beats_random_at_every_share"] else "no"
    return (f"{report['rows']} rows; weak quality {report['weak_quality']:.3f}, strong "
            f"{report['strong_quality']:.3f}; random baseline: mean of {RANDOM_DRAWS} orders "
            f"from seed {report['seed']}; router above random at every paid share: {verdict}")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _markdown(report: dict[str, Any]) -> str:
    return "\n\n".join([
        "## Routing evaluation", _facts(report), _md_table(*_summary(report)),
        "### Quality and PGR by paid share", _md_table(*_curve_rows(report)),
    ]) + "\n"


def _html(report: dict[str, Any]) -> str:
    from spillgate.reports.svgchart import Chart, Series, page, pct_ticks, table
    from spillgate.reports.svgchart import render as render_chart

    names = list(report["methods"])
    chart = Chart("Performance gap recovered by paid share", [
        Series(n, [(p["paid_share"], p[n]["pgr"]) for p in report["curve"]],
               dashed=n != report["router_label"]) for n in names],
        x_fmt=pct_ticks, y_fmt=pct_ticks, x_domain=(0.0, 1.0))
    body = (f'<p class="note">{_facts(report)}</p>' + table(*_summary(report))
            + render_chart(chart) + table(*_curve_rows(report)))
    return page("Routing evaluation", body)
