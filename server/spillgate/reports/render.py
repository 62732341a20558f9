"""Render a report dict (reports.build_report) or a Plan as json, md, csv or one HTML file.

The JSON form carries exact Decimal strings; md and HTML round money for reading (cents from
$1 up, 4 significant digits below, always plain decimals: $0.000007004, never 7.0044e-06)
and csv keeps the exact strings for spreadsheets. md and HTML open with the verdict: savings
against all-API, utilization against break-even, and whether one more unit would pay.
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

from spillgate.reports import svgchart
from spillgate.reports.svgchart import Chart, Marker, Series

SERIES_COLUMNS = (
    "requests", "local_requests", "api_requests", "local_tokens", "local_cached_tokens",
    "api_tokens", "local_busy_usd", "idle_usd", "local_total_usd", "api_usd", "busy_s",
    "idle_s", "utilization", "local_usd_per_million", "local_usd_per_million_with_idle",
    "api_usd_per_million", "reference_usd_per_million", "all_api_usd", "actual_usd",
    "savings_usd", "usage_basis_usd_per_million", "reservation_basis_usd_per_million",
    "unattributed_usd", "draft_usd",
)  # fmt: skip


def usd(value: str | Decimal | None, significant: int = 4) -> str:
    """Money for reading, in plain decimals: $1,234.57 from a dollar up, $0.4523 or $0.50
    from a cent up, then `significant` digits ($0.000007004)."""
    if value is None:
        return "n/a"
    d = value if isinstance(value, Decimal) else Decimal(value)
    if d == 0:
        return "$0"
    sign, d = ("-" if d < 0 else ""), abs(d)
    if d >= 1:
        return f"{sign}${d:,.2f}"
    if d >= Decimal("0.01"):  # 4 decimals, trailing zeros past the cents dropped
        text = f"{d:.4f}".rstrip("0")
        return f"{sign}${text}{'0' * max(0, 4 - len(text))}"
    exact = d.quantize(Decimal(1).scaleb(d.adjusted() - significant + 1))
    return f"{sign}${format(exact.normalize(), 'f')}"


def pct(value: float | None) -> str:
    """A ratio as a percentage with one decimal, or two significant digits below 1%."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 0.01:
        return f"{value * 100:.2g}%"
    return f"{value * 100:.1f}%"


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


def headline(report: dict[str, Any]) -> str:
    """The planner's answer in one line: savings, utilization vs break-even, one more unit."""
    v, t, a = report["verdict"], report["totals"], report["assumptions"]
    saved = Decimal(v["savings_usd"])
    if v["savings_share"] is None:
        money_part = "No traffic in this window"
    elif saved >= 0:
        money_part = (f"Saved {usd(saved)} ({pct(v['savings_share'])}) against sending "
                      f"everything to {a['reference_model']}")  # fmt: skip
    else:
        money_part = (f"Cost {usd(-saved)} ({pct(-v['savings_share'])}) more than sending "
                      f"everything to {a['reference_model']}")  # fmt: skip
    u, be = v["utilization"], v["break_even_utilization"]
    if be is None:
        use_part = f"utilization {pct(u)}, break-even unknown (no local tokens or busy time)"
    elif be > 1:
        use_part = f"utilization {pct(u)}; the hardware cannot break even (needs {pct(be)})"
    else:
        pays = "pays" if v["local_pays"] else "does not pay"
        use_part = f"utilization {pct(u)} vs break-even {pct(be)}: local {pays}"
    net = Decimal(v["one_more_unit_net_monthly_usd"])
    unit = f"one more {a['hardware_profile']} unit ({usd(t['one_more_unit_monthly_usd'])}/month)"
    if v["one_more_unit_pays"]:
        unit_part = f"{unit} would pay for itself: {usd(net)}/month less spill"
    else:
        unit_part = f"{unit} would not pay for itself ({usd(-net)}/month short)"
    return f"{money_part}; {use_part}; {unit_part}."


def power_source(t: dict[str, Any]) -> str:
    share = t.get("measured_power_share")
    if share is None:
        return "nominal watts (no measurement recorded)"
    return f"measured {pct(share)} of the time, nominal watts the rest"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline figures shared by md and HTML."""
    t, a = report["totals"], report["assumptions"]
    be = t["break_even_utilization"]
    return [
        ("Requests (local / API)",
         f"{t['requests']:,} ({t['local_requests']:,} / {t['api_requests']:,})"),
        ("Tokens local / API", f"{t['local_tokens']:,} / {t['api_tokens']:,}"),
        ("Local cost, busy (attributed)", usd(t["local_busy_usd"])),
        ("Local cost, idle", usd(t["idle_usd"])),
        ("Busy cost of other clients and spilled requests (unattributed)",
         usd(t["unattributed_usd"])),
        ("API cost", usd(t["api_usd"])),
        ("Cascade drafts (local hardware share, any tier)", usd(t["draft_usd"])),
        ("Actual spend", usd(t["actual_usd"])),
        ("All-API counterfactual", usd(t["all_api_usd"])),
        ("Savings", f"{usd(t['savings_usd'])} ({pct(t['savings_share'])})"),
        ("Local $/1M: usage basis (busy) / reservation basis (all uptime)",
         f"{usd(t['usage_basis_usd_per_million'])} / "
         f"{usd(t['reservation_basis_usd_per_million'])}"),
        ("Local $/1M tokens without idle", usd(t["local_usd_per_million"])),
        ("Local $/1M tokens with idle", usd(t["local_usd_per_million_with_idle"])),
        ("API $/1M tokens", usd(t["api_usd_per_million"])),
        (f"Reference $/1M ({a['reference_model']})", usd(t["reference_usd_per_million"])),
        ("Utilization", pct(t["utilization"])),
        ("Break-even utilization", pct(be) + (" (not reachable)" if be and be > 1 else "")),
        ("Power priced from", power_source(t)),
        ("Spill share (requests / tokens)",
         f"{pct(t['spill_share_requests'])} / {pct(t['spill_share_tokens'])}"),
        ("Spill spend (window / per month)",
         f"{usd(t['spill_usd'])} / {usd(t['spill_monthly_usd'])}"),
        (f"One more {a['hardware_profile']} per month", usd(t["one_more_unit_monthly_usd"])),
        ("One more unit would save per month", usd(t["one_more_unit_saves_monthly_usd"])),
    ]  # fmt: skip


def breakdown_rows(part: dict[str, Any]) -> list[list[str]]:
    return [
        [name, str(v["requests"]), f"{v['local_tokens']:,}", f"{v['api_tokens']:,}",
         usd(v["local_usd"]), usd(v["api_usd"]), usd(v["draft_usd"]), usd(v["cost_usd"]),
         usd(v["all_api_usd"])]
        for name, v in part.items()
    ]  # fmt: skip


BREAKDOWN_HEADERS = ("", "requests", "local tokens", "API tokens", "local", "API", "drafts",
                     "cost", "all-API")  # fmt: skip
SERIES_HEADERS = ("bucket", "requests", "local tokens", "API tokens", "local busy", "idle",
                  "API", "utilization")  # fmt: skip


def series_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [b["start"], str(b["requests"]), f"{b['local_tokens']:,}", f"{b['api_tokens']:,}",
         usd(b["local_busy_usd"]), usd(b["idle_usd"]), usd(b["api_usd"]), pct(b["utilization"])]
        for b in report["series"]
    ]  # fmt: skip


CACHE_HEADERS = ("", "hits", "tokens saved", "cost avoided")


def cache_rows(part: dict[str, Any]) -> list[list[str]]:
    return [[name, str(v["hits"]), f"{v['saved_tokens']:,}", usd(v["avoided_usd"])]
            for name, v in part.items()]


def cache_sections(report: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """'Saved by cache' (total, per key, tag, route); none for a report without it."""
    cache = report.get("cache")
    if not cache:
        return []
    return [("Saved by cache", cache_rows({"total": cache["totals"]})),
            *((f"Saved by cache per {view}", cache_rows(cache[f"by_{view}"]))
              for view in ("key", "tag", "route"))]


BATCH_HEADERS = ("batch", "requests", "local tokens", "API tokens", "local cost", "API cost")
BATCH_CSV_FIELDS = (
    "batches", "requests", "local_tokens", "api_tokens", "local_cost_usd", "api_cost_usd",
    "local_usd_per_million_tokens", "utilization_added", "idle_cost_absorbed_usd",
    "idle_cost_left_usd", "absorbed_share",
)  # fmt: skip


def batch_sections(report: dict[str, Any]) -> list[tuple[str, Sequence[str], list[list[str]]]]:
    """'Batches' (the figures of GET /admin/report/batches) and one row per batch; none for
    a report of a window without batch lines."""
    b = report.get("batches")
    if not b:
        return []
    per_million = b["local_usd_per_million_tokens"]
    figures = [
        ["batches / lines", f"{b['batches']} / {b['requests']}"],
        ["batch tokens (local / API)", f"{b['local_tokens']:,} / {b['api_tokens']:,}"],
        ["local cost (amortized)", usd(b["local_cost_usd"])],
        ["local $ per 1M tokens", usd(None if per_million is None else str(per_million))],
        ["API cost", usd(b["api_cost_usd"])],
        ["utilization added", pct(b["utilization_added"])],
        ["idle cost absorbed", f"{usd(b['idle_cost_absorbed_usd'])} "
                               f"({pct(b['absorbed_share'])} of the idle cost)"],
        ["idle cost left", usd(b["idle_cost_left_usd"])],
    ]
    per_batch = [[batch_id, str(v["requests"]), f"{v['local_tokens']:,}",
                  f"{v['api_tokens']:,}", usd(v["local_usd"]), usd(v["api_usd"])]
                 for batch_id, v in b["per_batch"].items()]
    return [("Batches", ("figure", "value"), figures),
            ("Per batch", BATCH_HEADERS, per_batch)]


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _title(report: dict[str, Any]) -> str:
    w = report["window"]
    return f"Spillgate cost report {w['since'][:16]} to {w['until'][:16]} UTC"


def report_md(report: dict[str, Any]) -> str:
    parts = [
        f"# {_title(report)}",
        f"**Verdict:** {headline(report)}",
        md_table(("figure", "value"), summary_rows(report)),
        "## Per key",
        md_table(BREAKDOWN_HEADERS, breakdown_rows(report["by_key"])),
        "## Per tag",
        md_table(BREAKDOWN_HEADERS, breakdown_rows(report["by_tag"])),
        f"## Per {report['window']['bucket']}",
        md_table(SERIES_HEADERS, series_rows(report)),
    ]
    for title, rows in cache_sections(report):
        parts += [f"## {title}", md_table(CACHE_HEADERS, rows)]
    for title, headers, rows in batch_sections(report):
        parts += [f"## {title}", md_table(headers, rows)]
    return "\n\n".join(parts) + "\n"


def report_csv(report: dict[str, Any]) -> str:
    """One row per bucket and a final `total` row; exact values, empty where undefined.
    A window with batch lines adds, after a blank line, a `batch_figure,value` table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("bucket_start", *SERIES_COLUMNS))
    for b in report["series"]:
        writer.writerow((b["start"], *(_cell(b[c]) for c in SERIES_COLUMNS)))
    writer.writerow(("total", *(_cell(report["totals"][c]) for c in SERIES_COLUMNS)))
    if report.get("batches"):
        writer.writerows([(), ("batch_figure", "value"),
                          *((f, _cell(report["batches"][f])) for f in BATCH_CSV_FIELDS)])
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _when(value: float, step: float) -> str:
    pattern = "%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M"
    return datetime.fromtimestamp(value, UTC).strftime(pattern)


_STEP_S = {"hour": 3600.0, "day": 86400.0}


def _points(report: dict[str, Any], key: str) -> list[tuple[float, float]]:
    """(bucket middle, value) for the buckets where the figure is defined."""
    half = _STEP_S[report["window"]["bucket"]] / 2
    return [
        (datetime.fromisoformat(b["start"]).timestamp() + half, float(b[key]))
        for b in report["series"]
        if b[key] is not None
    ]


def report_charts(report: dict[str, Any]) -> list[Chart]:
    """Cost per bucket (bars), $/1M and utilization (lines; a bar when there is one bucket),
    on an x axis spanning exactly the report's buckets."""
    t, series = report["totals"], report["series"]
    step = _STEP_S[report["window"]["bucket"]]
    first = datetime.fromisoformat(series[0]["start"]).timestamp()
    domain = (first, first + step * len(series))

    def chart(title: str, lines: list[Series], y_fmt: svgchart.TickFormat,
              markers: list[Marker]) -> Chart:  # fmt: skip
        return Chart(title, lines, _when, y_fmt, markers, x_domain=domain, bar_width=step)

    single = len(series) == 1
    cost_bars = len(series) <= 200  # thinner bars than a pixel or two read as noise
    ref = float(t["reference_usd_per_million"])
    be = t["break_even_utilization"]
    return [
        chart("Cost per bucket: local (busy + idle) vs API",
              [Series("local", _points(report, "local_total_usd"), bars=cost_bars),
               Series("API", _points(report, "api_usd"), bars=cost_bars)],
              svgchart.usd_ticks, []),
        chart("$ per 1M tokens",
              [Series("local without idle", _points(report, "local_usd_per_million"),
                      bars=single),
               Series("local with idle", _points(report, "local_usd_per_million_with_idle"),
                      bars=single),
               Series("API", _points(report, "api_usd_per_million"), dashed=True,
                      bars=single)],
              svgchart.usd_ticks,
              [Marker(ref, f"reference {report['assumptions']['reference_model']}")]),
        # An unreachable break-even (> 100%) is named in the title, not drawn: on the axis it
        # would squash the utilization line against zero.
        chart("Utilization (busy share of time)" + (
                  f"; break-even {pct(be)}, unreachable" if be is not None and be > 1 else ""),
              [Series("utilization", _points(report, "utilization"), bars=single)],
              svgchart.pct_ticks,
              [] if be is None or be > 1 else [Marker(be, "break-even")]),
    ]  # fmt: skip


def report_html(report: dict[str, Any]) -> str:
    body = [
        f'<p class="verdict"><strong>Verdict:</strong> {escape(headline(report))}</p>',
        svgchart.table(("figure", "value"), summary_rows(report)),
        *(svgchart.render(c) for c in report_charts(report)),
        "<h2>Per key</h2>",
        svgchart.table(BREAKDOWN_HEADERS, breakdown_rows(report["by_key"])),
        "<h2>Per tag</h2>",
        svgchart.table(BREAKDOWN_HEADERS, breakdown_rows(report["by_tag"])),
        f"<h2>Per {escape(report['window']['bucket'])}</h2>",
        svgchart.table(SERIES_HEADERS, series_rows(report)),
        *(f"<h2>{escape(title)}</h2>" + svgchart.table(CACHE_HEADERS, rows)
          for title, rows in cache_sections(report)),
        *(f"<h2>{escape(title)}</h2>" + svgchart.table(headers, rows)
          for title, headers, rows in batch_sections(report)),
        '<p class="note">Formulas and assumptions: docs/cost-model.md. Local busy cost is the '
        "hardware cost attributed to requests while they ran; idle cost is the rest.</p>",
    ]
    return svgchart.page(_title(report), "".join(body))
