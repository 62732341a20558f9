"""Entry points of the cost model: `spillgate report`, `spillgate plan`, GET /admin/report.

All three only gather inputs (ledger rows, price book, hardware profile) and hand them to
the pure builders in reports.py and plan.py; rendering lives in report_render.py.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from spillgate.catalog import Catalog
from spillgate.costing.hardware import HardwareProfile, get_profile, load_profiles
from spillgate.costing.pricing import PriceBook
from spillgate.errors import ConfigError, InvalidRequest, ServiceUnavailable
from spillgate.ledger.rollup import Views
from spillgate.reports.figures import (
    Bucket,
    Period,
    WindowTooLarge,
    as_utc,
    check_window,
    report_from_views,
)
from spillgate.reports.plan import Plan, project
from spillgate.reports.query import read_inputs, report_off_loop
from spillgate.reports.render import render_plan, render_report
from spillgate.settings import Settings, load_settings, repo_models_dir

DEFAULT_REFERENCE = "openai/gpt-4o-mini"
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime) -> datetime:
    """`7d`, `12h`, `30m`, `2w` before `now`, or an ISO date/datetime (UTC if naive)."""
    match = _AGO.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
    try:
        return as_utc(text.strip())
    except ValueError:
        raise ValueError(f"not a duration (7d, 12h) or ISO time: {text!r}") from None


def auto_bucket(since: datetime, until: datetime) -> Bucket:
    return "hour" if until - since <= timedelta(days=2) else "day"


def reference_model(settings: Settings, catalog: Catalog) -> str:
    """The first local backend's reference paid model (counterfactual), else gpt-4o-mini."""
    for backend in settings.local:
        model = catalog.local.get(backend.model)
        if model is not None and model.reference_api_model:
            return model.reference_api_model
    return DEFAULT_REFERENCE


# --- spillgate report ---------------------------------------------------------------------
def add_report_commands(subparsers: Any) -> None:
    """Register `report` and `plan` on the `spillgate` argparse subparsers."""
    rep = subparsers.add_parser("report", help="cost report from the ledger (html|md|csv|json)")
    rep.add_argument("--since", default="7d", help="start: 7d, 12h, 30m, 2w or ISO time")
    rep.add_argument("--until", help="end (default now): same forms as --since")
    rep.add_argument("--bucket", choices=("hour", "day"), help="series step (default: auto)")
    rep.add_argument("--format", choices=("html", "md", "csv", "json"), default="md")
    rep.add_argument("--output", type=Path, help="write here instead of stdout")
    rep.add_argument("--config", type=Path, help="node config (DSN, models dir, profile)")
    rep.add_argument("--dsn", help="ledger DSN, overriding the config")
    rep.add_argument("--reference-model", help="paid model to compare local cost with")
    rep.add_argument("--hardware", help="hardware profile, overriding cost.hardware_profile")
    rep.set_defaults(func=run_report)

    plan = subparsers.add_parser("plan", help="monthly cost of all-API, all-local and hybrid")
    plan.add_argument("--tokens-per-day", type=decimal_arg, required=True)
    plan.add_argument("--peak-factor", type=decimal_arg, default=Decimal(3), help="peak / mean")
    plan.add_argument("--hardware", required=True, help="profile name in hardware.yaml")
    plan.add_argument("--format", choices=("md", "json", "html"), default="md")
    plan.add_argument("--api-model", default=DEFAULT_REFERENCE, help="paid model to compare")
    plan.add_argument(
        "--tokens-per-second-per-gpu",
        type=decimal_arg,
        help="one unit's throughput (default: the profile's tokens_per_second)",
    )
    plan.add_argument(
        "--hybrid-percentile",
        type=decimal_arg,
        help="size the hybrid's local part for this load percentile (0..1), not the mean",
    )
    plan.add_argument(
        "--input-share",
        type=decimal_arg,
        default=Decimal("0.75"),
        help="share of tokens that are prompt tokens (blends the API price)",
    )
    plan.add_argument("--models-dir", type=Path, default=None, help="pricing/hardware folder")
    plan.add_argument("--output", type=Path, help="write here instead of stdout")
    plan.set_defaults(func=run_plan)


def decimal_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def run_report(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    now = datetime.now(UTC)
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else now
        bucket = args.bucket or auto_bucket(since, until)
        check_window(since, until, bucket)
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from exc
    book = PriceBook.load(settings.models_dir / "pricing.yaml")
    profiles = load_profiles(settings.models_dir / "hardware.yaml")
    profile = get_profile(profiles, args.hardware or settings.cost.hardware_profile)
    catalog = Catalog.load(settings.models_dir / "catalog.yaml")
    views, periods = asyncio.run(_read_ledger(args.dsn or settings.ledger_dsn(), since, until))
    report = report_from_views(
        views, periods, since=since, until=until, bucket=bucket, price_book=book,
        reference_model=args.reference_model or reference_model(settings, catalog),
        hardware_profile=profile, units=settings.cost.units,
    )  # fmt: skip
    _write(render_report(report, args.format), args.output)
    return 0


async def _read_ledger(dsn: str, since: datetime,
                       until: datetime) -> tuple[Views, list[Period]]:  # fmt: skip
    """Open the ledger (which brings its schema and rollup up to date), read the window."""
    from spillgate.ledger.store import Ledger

    ledger = await Ledger.open(dsn)
    try:
        return await read_inputs(ledger.engine, since, until)
    finally:
        await ledger.aclose()


# --- spillgate plan -----------------------------------------------------------------------
def run_plan(args: argparse.Namespace) -> int:
    models_dir: Path = args.models_dir or repo_models_dir()
    profile = get_profile(load_profiles(models_dir / "hardware.yaml"), args.hardware)
    price = PriceBook.load(models_dir / "pricing.yaml").price_for(args.api_model)
    tps = args.tokens_per_second_per_gpu or profile.tokens_per_second
    if tps <= 0:
        raise ConfigError(f"profile {profile.name} has no tokens_per_second: pass "
                          "--tokens-per-second-per-gpu")  # fmt: skip

    def at(tokens: Decimal) -> Plan:
        return project(
            tokens, args.peak_factor, profile, tps, price,
            input_share=args.input_share, hybrid_percentile=args.hybrid_percentile,
        )  # fmt: skip

    try:
        plan = at(args.tokens_per_day)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    sweep = plan_sweep(plan, at) if args.format == "html" else []
    _write(render_plan(plan, args.format, sweep), args.output)
    return 0


def plan_sweep(plan: Plan, at: Any, steps: int = 60) -> list[Plan]:
    """Plans from 0 to twice the load (or 1.5x the break-even, if further) for the chart."""
    top = plan.tokens_per_day * 2
    if plan.break_even_tokens_per_day is not None:
        top = max(top, plan.break_even_tokens_per_day * Decimal("1.5"))
    if top == 0:
        top = Decimal(1_000_000)
    return [at(top * i / steps) for i in range(steps + 1)]


# --- GET /admin/report --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReportSources:
    """What the endpoint reads besides the ledger; derived from the node's settings."""

    hardware_profile: HardwareProfile
    reference_model: str
    units: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportSources:
        profiles = load_profiles(settings.models_dir / "hardware.yaml")
        catalog = Catalog.load(settings.models_dir / "catalog.yaml")
        return cls(
            get_profile(profiles, settings.cost.hardware_profile),
            reference_model(settings, catalog),
            settings.cost.units,
        )


def _ledger_and_prices(state: Any) -> tuple[Any, PriceBook]:
    """`app.state.ledger`/`price_book`, or the accountant's (how create_app joins them).
    The ledger is read through its `engine`'s DSN."""
    accountant = getattr(state, "accountant", None)
    ledger = getattr(state, "ledger", None) or getattr(accountant, "ledger", None)
    book = getattr(state, "price_book", None) or getattr(accountant, "prices", None)
    if ledger is None or not isinstance(book, PriceBook):
        raise ServiceUnavailable("the cost ledger is not open")
    return ledger, book


REPORT_MEDIA_TYPES = {
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}


def report_window(since: str, until: str | None, bucket: str | None,
                  now: datetime) -> tuple[datetime, datetime, Bucket]:  # fmt: skip
    """The query's window, or InvalidRequest naming the parameter at fault."""
    try:
        start = parse_when(since, now)
        end = parse_when(until, now) if until else now
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since/until") from exc
    if end <= start:
        raise InvalidRequest("until must be after since", param="until")
    if bucket not in (None, "hour", "day"):
        raise InvalidRequest(f"bucket must be hour or day, got {bucket!r}", param="bucket")
    step: Bucket = bucket or auto_bucket(start, end)  # type: ignore[assignment]
    try:
        check_window(start, end, step)
    except WindowTooLarge as exc:
        raise InvalidRequest(str(exc), param="since") from exc
    return start, end, step


def admin_report_router(sources: ReportSources | None = None) -> APIRouter:
    """GET /admin/report?since=7d&until=&bucket=&format=json|html|md|csv → the report.

    Reads the ledger and price book from app.state (see `_ledger_and_prices`); profile and
    reference model come from `sources`, else from `app.state.settings`. The report is read
    and rendered in a worker thread with its own connections (report_query.report_off_loop):
    the event loop only waits for it. Mount it behind the admin-key check.
    """
    router = APIRouter()

    @router.get("/admin/report")
    async def admin_report(
        request: Request,
        since: str = "7d",
        until: str | None = None,
        bucket: str | None = None,
        format: str = "json",
    ) -> Response:
        start, end, step = report_window(since, until, bucket, datetime.now(UTC))
        if format not in REPORT_MEDIA_TYPES:
            raise InvalidRequest(f"format must be one of {', '.join(REPORT_MEDIA_TYPES)}",
                                 param="format")  # fmt: skip
        ledger, book = _ledger_and_prices(request.app.state)
        src = sources or ReportSources.from_settings(request.app.state.settings)

        def build(views: Views, periods: list[Period]) -> str:
            report = report_from_views(
                views, periods, since=start, until=end, bucket=step, price_book=book,
                reference_model=src.reference_model, hardware_profile=src.hardware_profile,
                units=src.units,
            )  # fmt: skip
            return render_report(report, format)

        dsn = ledger.engine.url.render_as_string(hide_password=False)
        text = await asyncio.to_thread(report_off_loop, dsn, start, end, build)
        return Response(text, media_type=REPORT_MEDIA_TYPES[format])

    return router
