"""Render a report dict (reports.build_report) or a Plan as json, md, csv or one HTML file.

The JSON form carries exact Decimal strings; md and HTML round money for reading (cents from
$1 up, 6 significant digits below) and csv keeps the exact strings for spreadsheets.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from typing import Any

from spillgate.accounting import svgchart
from spillgate.accounting.plan import Plan
from spillgate.accounting.svgchart import Chart, Marker, Series

SERIES_COLUMNS = (
    "requests", "local_requests", "api_requests", "local_tokens", "local_cached_tokens",
    "api_tokens", "local_busy_usd", "idle_usd", "local_total_usd", "api_usd", "busy_s",
    "idle_s", "utilization", "local_usd_per_million", "local_usd_per_million_with_idle",
    "api_usd_per_million", "reference_usd_per_million", "all_api_usd", "actual_usd",
    "savings_usd",
)  # fmt: skip


def usd(value: str | None) -> str:
    """Money for reading: $1,234.57 from a dollar up, 6 significant digits below."""
    if value is None:
        return "n/a"
    d = Decimal(value)
    if abs(d) >= 1:
        return f"${d:,.2f}"
    return "$0" if d == 0 else f"${float(d):.6g}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_report(report: dict[str, Any], fmt: str) -> str:
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "json": lambda r: json.dumps(r, indent=2) + "\n",
        "md": report_md,
        "csv": report_csv,
        "html": report_html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r} (json, md, csv, html)")
    return renderers[fmt](report)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline figures shared by md and HTML."""
    t, a = report["totals"], report["assumptions"]
    be = t["break_even_utilization"]
    return [
        ("Requests (local / API)",
         f"{t['requests']} ({t['local_requests']} / {t['api_requests']})"),
        ("Tokens local / API", f"{t['local_tokens']:,} / {t['api_tokens']:,}"),
        ("Local cost, busy (attributed)", usd(t["local_busy_usd"])),
        ("Local cost, idle", usd(t["idle_usd"])),
        ("API cost", usd(t["api_usd"])),
        ("Actual spend", usd(t["actual_usd"])),
        ("All-API counterfactual", usd(t["all_api_usd"])),
        ("Savings", f"{usd(t['savings_usd'])} ({pct(t['savings_share'])})"),
        ("Local $/1M tokens without idle", usd(t["local_usd_per_million"])),
        ("Local $/1M tokens with idle", usd(t["local_usd_per_million_with_idle"])),
        ("API $/1M tokens", usd(t["api_usd_per_million"])),
        (f"Reference $/1M ({a['reference_model']})", usd(t["reference_usd_per_million"])),
        ("Utilization", pct(t["utilization"])),
        ("Break-even utilization", pct(be) + (" (not reachable)" if be and be > 1 else "")),
        ("Spill share (requests / tokens)",
         f"{pct(t['spill_share_requests'])} / {pct(t['spill_share_tokens'])}"),
        ("Spill spend (window / per month)",
         f"{usd(t['spill_usd'])} / {usd(t['spill_monthly_usd'])}"),
        (f"One more {a['hardware_profile']} per month", usd(t["one_more_unit_monthly_usd"])),
    ]  # fmt: skip


def breakdown_rows(part: dict[str, Any]) -> list[list[str]]:
    return [
        [name, str(v["requests"]), f"{v['local_tokens']:,}", f"{v['api_tokens']:,}",
         usd(v["local_usd"]), usd(v["api_usd"]), usd(v["cost_usd"]), usd(v["all_api_usd"])]
        for name, v in part.items()
    ]  # fmt: skip


BREAKDOWN_HEADERS = ("", "requests", "local tokens", "API tokens", "local", "API", "cost",
                     "all-API")  # fmt: skip
SERIES_HEADERS = ("bucket", "requests", "local tokens", "API tokens", "local busy", "idle",
                  "API", "utilization")  # fmt: skip


def series_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [b["start"], str(b["requests"]), f"{b['local_tokens']:,}", f"{b['api_tokens']:,}",
         usd(b["local_busy_usd"]), usd(b["idle_usd"]), usd(b["api_usd"]), pct(b["utilization"])]
        for b in report["series"]
    ]  # fmt: skip


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _title(report: dict[str, Any]) -> str:
    w = report["window"]
    return f"Spillgate cost report {w['since'][:16]} to {w['until'][:16]} UTC"


def report_md(report: dict[str, Any]) -> str:
    parts = [
        f"# {_title(report)}",
        _md_table(("figure", "value"), summary_rows(report)),
        "## Per key",
        _md_table(BREAKDOWN_HEADERS, breakdown_rows(report["by_key"])),
        "## Per tag",
        _md_table(BREAKDOWN_HEADERS, breakdown_rows(report["by_tag"])),
        f"## Per {report['window']['bucket']}",
        _md_table(SERIES_HEADERS, series_rows(report)),
    ]
    return "\n\n".join(parts) + "\n"


def report_csv(report: dict[str, Any]) -> str:
    """One row per bucket and a final `total` row; exact values, empty where undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("bucket_start", *SERIES_COLUMNS))
    for b in report["series"]:
        writer.writerow((b["start"], *(_cell(b[c]) for c in SERIES_COLUMNS)))
    writer.writerow(("total", *(_cell(report["totals"][c]) for c in SERIES_COLUMNS)))
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _when(bucket: str) -> Callable[[float], str]:
    pattern = "%Y-%m-%d" if bucket == "day" else "%m-%d %H:%M"
    return lambda v: datetime.fromtimestamp(v, UTC).strftime(pattern)


def _points(report: dict[str, Any], key: str) -> list[tuple[float, float]]:
    return [
        (datetime.fromisoformat(b["start"]).timestamp(), float(b[key]))
        for b in report["series"]
        if b[key] is not None
    ]


def report_charts(report: dict[str, Any]) -> list[Chart]:
    when = _when(report["window"]["bucket"])
    t = report["totals"]
    money_fmt: Callable[[float], str] = lambda v: f"${v:.4g}"  # noqa: E731
    ref = float(t["reference_usd_per_million"])
    be = t["break_even_utilization"]
    return [
        Chart("Cost per bucket: local (busy + idle) vs API",
              [Series("local", _points(report, "local_total_usd")),
               Series("API", _points(report, "api_usd"))], when, money_fmt),
        Chart("$ per 1M tokens",
              [Series("local without idle", _points(report, "local_usd_per_million")),
               Series("local with idle", _points(report, "local_usd_per_million_with_idle")),
               Series("API", _points(report, "api_usd_per_million"), dashed=True)],
              when, money_fmt,
              [Marker(ref, f"reference {report['assumptions']['reference_model']}")]),
        Chart("Utilization (busy share of time)",
              [Series("utilization", _points(report, "utilization"))], when,
              lambda v: f"{v * 100:.0f}%",
              [] if be is None else [Marker(be, "break-even" + (" (unreachable)" * (be > 1)))]),
    ]  # fmt: skip


def report_html(report: dict[str, Any]) -> str:
    body = [
        svgchart.table(("figure", "value"), summary_rows(report)),
        *(svgchart.render(c) for c in report_charts(report)),
        "<h2>Per key</h2>",
        svgchart.table(BREAKDOWN_HEADERS, breakdown_rows(report["by_key"])),
        "<h2>Per tag</h2>",
        svgchart.table(BREAKDOWN_HEADERS, breakdown_rows(report["by_tag"])),
        f"<h2>Per {escape(report['window']['bucket'])}</h2>",
        svgchart.table(SERIES_HEADERS, series_rows(report)),
        '<p class="note">Formulas and assumptions: docs/cost-model.md. Local busy cost is the '
        "hardware cost attributed to requests while they ran; idle cost is the rest.</p>",
    ]
    return svgchart.page(_title(report), "".join(body))


# --- plan ---------------------------------------------------------------------------------
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
            _md_table(("input", "value"), plan_facts(plan)),
            _md_table(PLAN_HEADERS, plan_rows(plan)),
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
        x_fmt=lambda v: f"{v / 1e6:.3g}M",
        y_fmt=lambda v: f"${v:,.0f}",
        markers=markers,
    )
