"""Inline SVG line charts and a self-contained HTML page shell for reports and plans.

Everything is generated here as text: no JavaScript, no fonts or stylesheets fetched from
anywhere, so a report opens offline and can be mailed as one file. Plotting uses floats
(pixels); the figures printed next to the charts come from the exact Decimal values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
W, H = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 28, 40


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    step: bool = False  # draw as a staircase (e.g. whole GPUs)


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
    x_fmt: Callable[[float], str] = field(default=lambda v: f"{v:g}")
    y_fmt: Callable[[float], str] = field(default=lambda v: f"{v:g}")
    markers: Sequence[Marker] = ()
    y_min: float | None = 0.0


def render(chart: Chart) -> str:
    """One <figure> with an inline <svg>; an empty-data chart says so instead of lying."""
    pts = [p for s in chart.series for p in s.points]
    if not pts:
        return f"<figure><figcaption>{escape(chart.title)}</figcaption><p>no data</p></figure>"
    xs = [p[0] for p in pts] + [m.value for m in chart.markers if m.axis == "x"]
    ys = [p[1] for p in pts] + [m.value for m in chart.markers if m.axis == "y"]
    x0, x1 = _span(min(xs), max(xs))
    y0, y1 = _span(min(ys) if chart.y_min is None else min(chart.y_min, *ys), max(ys))

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def sy(y: float) -> float:
        return H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    parts = [_axes(chart, x0, x1, y0, y1, sx, sy)]
    for i, s in enumerate(chart.series):
        parts.append(_polyline(s, PALETTE[i % len(PALETTE)], sx, sy))
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


def _axes(
    chart: Chart,
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    sx: Callable[[float], float],
    sy: Callable[[float], float],
) -> str:
    out = [
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="ax"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="ax"/>',
    ]
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        out.append(
            f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{W - RIGHT}" y2="{sy(y):.1f}" class="grid"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{escape(chart.y_fmt(y))}</text>"
        )
        x = x0 + (x1 - x0) * k / 4
        out.append(
            f'<text x="{sx(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(chart.x_fmt(x))}</text>"
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
.note{color:#555;font-size:12px}
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
