"""The canary report: cost, latency, cascade escalations and client feedback per arm and model.

One GROUP BY over the ledger's request rows of a window (route, arm, tier, model), summed per
arm in Python. A row's cost is `cost_usd + draft_usd`: an escalated cascade request paid the
API and also ran a local draft. Mean feedback is over rated requests only (`rated` says how
many), mean latency over answered ones. Rows still open are left out; a route that is not
split shows as the arm "" (rendered `-`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.ledger.schema import Money, requests


@dataclass(slots=True)
class ArmFigures:
    """Sums of one group (an arm, or one model within an arm) and the means they give."""

    route: str
    arm: str
    model: str = ""  # "" for the arm's total
    requests: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms_sum: float = 0.0
    answered: int = 0
    feedback_sum: float = 0.0
    rated: int = 0
    cascade: int = 0  # cascade drafts judged
    escalated: int = 0
    models: list[ArmFigures] = field(default_factory=list)

    def add(self, other: ArmFigures) -> None:
        self.requests += other.requests
        self.cost_usd += other.cost_usd
        self.latency_ms_sum += other.latency_ms_sum
        self.answered += other.answered
        self.feedback_sum += other.feedback_sum
        self.rated += other.rated
        self.cascade += other.cascade
        self.escalated += other.escalated

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.answered if self.answered else None

    @property
    def mean_feedback(self) -> float | None:
        return self.feedback_sum / self.rated if self.rated else None

    @property
    def cost_per_request_usd(self) -> Decimal | None:
        return self.cost_usd / self.requests if self.requests else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.cascade if self.cascade else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "route": self.route, "arm": self.arm, "requests": self.requests,
            "cost_usd": str(self.cost_usd), "cost_per_request_usd": _opt(
                self.cost_per_request_usd), "mean_latency_ms": self.mean_latency_ms,
            "mean_feedback": self.mean_feedback, "rated": self.rated,
            "cascade_drafts": self.cascade, "escalation_rate": self.escalation_rate,
        }  # fmt: skip
        if self.model:
            out["model"] = self.model
        else:
            out["models"] = [m.as_json() for m in self.models]
        return out


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def arms_query(since: datetime, until: datetime) -> Select[Any]:
    r = requests.c
    cascade = r.reason.like("cascade%") & (r.reason != "cascade_stream_local")
    return (
        select(
            r.route, r.arm, r.tier, r.model,
            func.count().label("requests"),
            func.sum(r.cost_usd, type_=Money()).label("cost_usd"),
            func.sum(r.draft_usd, type_=Money()).label("draft_usd"),
            func.coalesce(func.sum(r.latency_ms), 0.0).label("latency_ms_sum"),
            func.count(r.latency_ms).label("answered"),
            func.coalesce(func.sum(r.feedback), 0.0).label("feedback_sum"),
            func.count(r.feedback).label("rated"),
            func.sum(case((cascade, 1), else_=0)).label("cascade"),
            func.sum(case((r.reason.like("cascade_escalated%"), 1), else_=0)).label("escalated"),
        )
        .where(r.started_at >= since, r.started_at < until, r.state != "open")
        .group_by(r.route, r.arm, r.tier, r.model)
    )


async def read_arms(conn: AsyncConnection, since: datetime, until: datetime,
                    ) -> list[ArmFigures]:  # fmt: skip
    result = await conn.execute(arms_query(since, until))
    return fold(dict(row._mapping) for row in result)


def fold(rows: Iterable[dict[str, Any]]) -> list[ArmFigures]:
    """Group rows (one per route, arm, tier, model) into arms, each with its models."""
    arms: dict[tuple[str, str], ArmFigures] = {}
    for row in rows:
        route, arm = str(row["route"]), str(row["arm"] or "")
        model = ArmFigures(
            route, arm, model=f"{row['tier']}:{row['model'] or '-'}",
            requests=int(row["requests"]),
            cost_usd=Decimal(row["cost_usd"] or 0) + Decimal(row["draft_usd"] or 0),
            latency_ms_sum=float(row["latency_ms_sum"] or 0), answered=int(row["answered"]),
            feedback_sum=float(row["feedback_sum"] or 0), rated=int(row["rated"]),
            cascade=int(row["cascade"] or 0), escalated=int(row["escalated"] or 0),
        )
        total = arms.setdefault((route, arm), ArmFigures(route, arm))
        total.add(model)
        total.models.append(model)
    for total in arms.values():
        total.models.sort(key=lambda m: m.model)
    return [arms[k] for k in sorted(arms)]


# --- rendering ------------------------------------------------------------------------------
_COLUMNS = ("route", "arm", "model", "requests", "cost USD", "USD/request", "mean latency ms",
            "mean feedback", "rated", "escalated")


def _cells(f: ArmFigures) -> list[str]:
    per = f.cost_per_request_usd
    rate = f.escalation_rate
    return [
        f.route, f.arm or "-", f.model or "(all)", str(f.requests), f"{f.cost_usd:.6f}",
        "-" if per is None else f"{per:.6f}",
        "-" if f.mean_latency_ms is None else f"{f.mean_latency_ms:.1f}",
        "-" if f.mean_feedback is None else f"{f.mean_feedback:.3f}", str(f.rated),
        "-" if rate is None else f"{rate:.1%} of {f.cascade}",
    ]


def _lines(arms: list[ArmFigures]) -> list[list[str]]:
    return [cells for arm in arms for cells in (_cells(arm), *map(_cells, arm.models))]


def render_arms(arms: list[ArmFigures], fmt: str, since: datetime, until: datetime) -> str:
    if fmt == "json":
        return orjson.dumps({"since": since.isoformat(), "until": until.isoformat(),
                             "arms": [a.as_json() for a in arms]},
                            option=orjson.OPT_INDENT_2).decode() + "\n"
    title = f"Arms {since:%Y-%m-%d %H:%M} - {until:%Y-%m-%d %H:%M} UTC"
    if fmt == "html":
        head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>"
                       for line in _lines(arms))
        return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                f"<h1>{html.escape(title)}</h1><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>\n")
    rows = [f"# {title}", "", "| " + " | ".join(_COLUMNS) + " |",
            "|" + "---|" * len(_COLUMNS)]
    rows += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"
             for line in _lines(arms)]
    return "\n".join(rows) + "\n"
