"""Inline SVG line and bar charts and a self-contained HTML page shell for reports and plans.

Everything is generated here as text: no JavaScript, no fonts or stylesheets fetched from
anywhere, so a report opens offline and can be mailed as one file. Plotting uses floats
(pixels); the figures printed next to the charts come from the exact Decimal values.

Axes fit the data: the x axis spans `Chart.x_domain` when given (a report's window), the
y axis runs from 0 to the first "nice" tick (1, 2, 2.5 or 5 x 10^k steps) at or above the
largest value, and tick labels get as many decimals as their step needs (formatters take
the value and the step), so a 0-0.4% utilization axis reads 0.1%, 0.2%... not 0% five times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
W, H = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 28, 40


TickFormat = Callable[[float, float], str]  # (value, step between ticks) -> label


def plain_ticks(value: float, step: float) -> str:
    return f"{value:.{decimals_for(step)}f}"


def usd_ticks(value: float, step: float) -> str:
    return f"${value:,.{decimals_for(step)}f}"


def pct_ticks(value: float, step: float) -> str:
    """A ratio (0.25) as a percentage ("25%"), with the decimals the step needs."""
    return f"{value * 100:.{decimals_for(step * 100)}f}%"


def decimals_for(step: float) -> int:
    """Decimals that tell ticks `step` apart: 0 for steps >= 1, 2 for 0.01 or 0.025."""
    if step <= 0 or step >= 10:
        return 0
    if step >= 1:
        return 1 if _mantissa(step) == 2.5 else 0
    return min(12, -math.floor(math.log10(step) + 1e-9) + (1 if _mantissa(step) == 2.5 else 0))


def _mantissa(step: float) -> float:
    return round(step / 10.0 ** math.floor(math.log10(step)), 6)


def nice_step(span: float, ticks: int = 4) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k step that covers `span` in `ticks` steps."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for mantissa in (1, 2, 2.5, 5, 10):
        if mantissa * power >= raw * (1 - 1e-9):
            return mantissa * power
    return 10 * power  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    step: bool = False  # draw as a staircase (e.g. whole GPUs)
    bars: bool = False  # one bar per point, `Chart.bar_width` wide (amounts per bucket)


@dataclass(frozen=True, slots=True)
class Marker:
    """A labelled vertical (axis='x') or horizontal (axis='y') reference line."""

    value: float
    label: str
    axis: str = "y"


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    series: Sequence[Series]
    x_fmt: TickFormat = field(default=plain_ticks)
    y_fmt: TickFormat = field(default=plain_ticks)
    markers: Sequence[Marker] = ()
    y_min: float | None = 0.0
    x_domain: tuple[float, float] | None = None  # e.g. the report's window; else the data's
    bar_width: float = 0.0  # in x units: the width of one point's bar group


def render(chart: Chart) -> str:
    """One <figure> with an inline <svg>; an empty-data chart says so instead of lying."""
    pts = [p for s in chart.series for p in s.points]
    if not pts:
        return f"<figure><figcaption>{escape(chart.title)}</figcaption><p>no data</p></figure>"
    xs = [p[0] for p in pts] + [m.value for m in chart.markers if m.axis == "x"]
    ys = [p[1] for p in pts] + [m.value for m in chart.markers if m.axis == "y"]
    x0, x1 = chart.x_domain or _span(min(xs), max(xs))
    lo = min(ys) if chart.y_min is None else min(chart.y_min, *ys)
    y_step = nice_step(max(ys) - lo)
    y0 = math.floor(lo / y_step) * y_step
    y1 = max(y0 + y_step, math.ceil(max(ys) / y_step - 1e-9) * y_step)

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def sy(y: float) -> float:
        return H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    parts = [_axes(chart, (x0, x1), (y0, y1, y_step), sx, sy)]
    bar_series = [s for s in chart.series if s.bars]
    for i, s in enumerate(chart.series):
        color = PALETTE[i % len(PALETTE)]
        if s.bars:
            slot = (bar_series.index(s), len(bar_series))
            parts.append(_bars(s, color, slot, chart.bar_width, sx, sy, y0))
        else:
            parts.append(_polyline(s, color, sx, sy))
    for m in chart.markers:
        parts.append(_marker(m, sx, sy))
    legend = "".join(
        f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>'
        f"{escape(s.name)}</span>"
        for i, s in enumerate(chart.series)
    )
    return (
        f"<figure><figcaption>{escape(chart.title)}</figcaption>"
        f'<svg viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(chart.title)}">{"".join(parts)}</svg>'
        f'<div class="legend">{legend}</div></figure>'
    )


def _span(lo: float, hi: float) -> tuple[float, float]:
    if hi <= lo:
        return (lo - 1.0, hi + 1.0) if lo == 0 else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
    return lo, hi + (hi - lo) * 0.05


def _bars(s: Series, color: str, slot: tuple[int, int], width: float,
          sx: Callable[[float], float], sy: Callable[[float], float],
          base: float) -> str:  # fmt: skip
    """Bars centred on each point's x; series side by side within the point's `width`."""
    index, count = slot
    each = width * 0.8 / count
    out = []
    for x, y in s.points:
        left = x - width * 0.4 + index * each
        top, bottom = sy(max(y, base)), sy(base)
        wide = sx(left + each) - sx(left)
        out.append(f'<rect x="{sx(left):.1f}" y="{top:.1f}" width="{wide:.1f}" '
                   f'height="{bottom - top:.1f}" fill="{color}"/>')  # fmt: skip
    return "".join(out)


def _axes(
    chart: Chart,
    x_range: tuple[float, float],
    y_range: tuple[float, float, float],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
) -> str:
    (x0, x1), (y0, y1, y_step) = x_range, y_range
    out = [
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="ax"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="ax"/>',
    ]
    for k in range(round((y1 - y0) / y_step) + 1):
        y = y0 + k * y_step
        out.append(
            f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{W - RIGHT}" y2="{sy(y):.1f}" class="grid"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{escape(chart.y_fmt(y, y_step))}</text>"
        )
    for k in range(5):
        x = x0 + (x1 - x0) * k / 4
        out.append(
            f'<text x="{sx(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(chart.x_fmt(x, (x1 - x0) / 4))}</text>"
        )
    return "".join(out)


def _polyline(
    s: Series, color: str, sx: Callable[[float], float], sy: Callable[[float], float]
) -> str:
    pts = sorted(s.points)
    if s.step:
        stepped: list[tuple[float, float]] = []
        for i, (x, y) in enumerate(pts):
            if i:
                stepped.append((x, pts[i - 1][1]))
            stepped.append((x, y))
        pts = stepped
    if not pts:
        return ""
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    dots = (
        ""
        if len(pts) > 1
        else f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{color}"/>'
    )
    return (
        f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash}/>{dots}'
    )


def _marker(m: Marker, sx: Callable[[float], float], sy: Callable[[float], float]) -> str:
    label = escape(m.label)
    if m.axis == "x":
        x = sx(m.value)
        return (
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" class="mark"/>'
            f'<text x="{x + 4:.1f}" y="{TOP + 10}" class="mlabel">{label}</text>'
        )
    y = sy(m.value)
    return (
        f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" class="mark"/>'
        f'<text x="{W - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" class="mlabel">{label}</text>'
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;
margin:2rem auto;max-width:960px;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}
figure{margin:1rem 0}figcaption{font-weight:600;margin-bottom:.25rem}
svg{width:100%;height:auto;background:#fff}svg text{font-size:11px;fill:#444}
.ax{stroke:#333}.grid{stroke:#eee}.mark{stroke:#111;stroke-dasharray:2 3}
.mlabel{fill:#111;font-weight:600}.legend{font-size:12px}.key{margin-right:1rem}
.key i{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
.note{color:#555;font-size:12px}.verdict{font-size:1.05rem;padding:.5rem .75rem;
background:#f0f7ff;border-left:4px solid #2563eb}
"""


def page(title: str, body: str) -> str:
    """A complete HTML document with inline CSS around already-escaped `body` HTML."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; every cell is escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
