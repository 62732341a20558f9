"""Render a capacity Plan (reports.plan) as json, md or one HTML file with its cost chart."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal

from spillgate.reports import svgchart
from spillgate.reports.plan import Plan
from spillgate.reports.render import md_table, usd
from spillgate.reports.svgchart import Chart, Marker, Series


def plan_rows(plan: Plan) -> list[list[str]]:
    return [
        [s.name, str(s.units), f"{s.local_tokens_per_day:,.0f}", f"{s.api_tokens_per_day:,.0f}",
         usd(str(s.hardware_monthly_usd)), usd(str(s.api_monthly_usd)),
         usd(str(s.total_monthly_usd))]
        for s in plan.strategies
    ]  # fmt: skip


PLAN_HEADERS = ("strategy", "units", "local tokens/day", "API tokens/day", "hardware/month",
                "API/month", "total/month")  # fmt: skip


def plan_facts(plan: Plan) -> list[tuple[str, str]]:
    be = plan.break_even_tokens_per_day
    return [
        ("Tokens per day", f"{plan.tokens_per_day:,.0f}"),
        ("Average / peak tokens/s", f"{plan.average_tps:,.1f} / {plan.peak_tps:,.1f}"),
        (f"One {plan.profile} unit per month", usd(str(plan.unit_monthly_usd))),
        ("Throughput per unit (tokens/s)", f"{plan.tokens_per_second_per_unit:,}"),
        (f"{plan.api_model} blended $/1M", usd(str(plan.api_usd_per_million))),
        ("Hybrid sized for", plan.hybrid_sizing),
        ("Break-even tokens/day", "none at this throughput" if be is None else f"{be:,.0f}"),
        ("Cheapest", plan.cheapest().name),
    ]


def render_plan(plan: Plan, fmt: str, sweep: Sequence[Plan] = ()) -> str:
    """`sweep`: plans for a range of tokens/day (same other inputs), charted in HTML."""
    if fmt == "json":
        return json.dumps(plan.to_dict(), indent=2) + "\n"
    if fmt == "md":
        return "\n\n".join([
            f"# Spillgate plan: {plan.profile} vs {plan.api_model}",
            md_table(("input", "value"), plan_facts(plan)),
            md_table(PLAN_HEADERS, plan_rows(plan)),
        ]) + "\n"  # fmt: skip
    if fmt == "html":
        body = [
            svgchart.table(("input", "value"), plan_facts(plan)),
            svgchart.table(PLAN_HEADERS, plan_rows(plan)),
            svgchart.render(plan_chart(plan, sweep)),
            '<p class="note">Load model and formulas: docs/cost-model.md.</p>',
        ]
        return svgchart.page(f"Spillgate plan: {plan.profile} vs {plan.api_model}", "".join(body))
    raise ValueError(f"unknown format {fmt!r} (json, md, html)")


def plan_chart(plan: Plan, sweep: Sequence[Plan]) -> Chart:
    def line(pick: Callable[[Plan], Decimal]) -> list[tuple[float, float]]:
        return [(float(p.tokens_per_day), float(pick(p))) for p in sweep]

    markers = [Marker(float(plan.tokens_per_day), "this load", "x")]
    if plan.break_even_tokens_per_day is not None:
        markers.append(Marker(float(plan.break_even_tokens_per_day), "break-even", "x"))
    return Chart(
        "Monthly cost vs tokens per day",
        [
            Series("all-API", line(lambda p: p.all_api.total_monthly_usd)),
            Series("all-local", line(lambda p: p.all_local.total_monthly_usd), step=True),
            Series("hybrid", line(lambda p: p.hybrid.total_monthly_usd), dashed=True),
        ],
        x_fmt=lambda v, _step: f"{v / 1e6:.3g}M",
        y_fmt=svgchart.usd_ticks,
        markers=markers,
    )
