"""`spillgate report` and `spillgate plan`: argparse only; the report itself is
`reports.gather.gather_report`, the plan `reports.plan.project`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from spillgate.costing.hardware import get_profile, load_profiles
from spillgate.costing.pricing import PriceBook
from spillgate.errors import ConfigError
from spillgate.reports.figures import check_window
from spillgate.reports.gather import (
    DEFAULT_REFERENCE,
    ReportSources,
    Window,
    auto_bucket,
    gather_report,
    parse_when,
)
from spillgate.reports.plan import Plan, plan_sweep, project
from spillgate.reports.render import render_report
from spillgate.reports.render_plan import render_plan
from spillgate.settings import load_settings, repo_models_dir


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
    rep.add_argument("--arms", action="store_true", help="compare canary arms instead: cost, "
                     "latency, escalations and mean feedback per arm and model (html|md|json)")
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
    if args.arms:
        return run_arms_report(args, args.dsn or settings.ledger_dsn(), since, until)
    book = PriceBook.load(settings.models_dir / "pricing.yaml")
    sources = ReportSources.from_settings(settings, hardware=args.hardware,
                                          reference=args.reference_model)
    dsn = args.dsn or settings.ledger_dsn()
    asyncio.run(_bring_up_to_date(dsn))
    text = gather_report(dsn, Window(since, until, bucket), book, sources,
                         lambda report: render_report(report, args.format))
    _write(text, args.output)
    return 0


def run_arms_report(args: argparse.Namespace, dsn: str, since: datetime,
                    until: datetime) -> int:
    from spillgate.reports.arms import read_arms, render_arms

    if args.format == "csv":
        raise ConfigError("--arms: choose --format html, md or json")

    async def read() -> str:
        from spillgate.ledger.store import Ledger

        ledger = await Ledger.open(dsn)  # migrates: an older ledger gains the arm columns
        try:
            async with ledger.reading() as conn:
                arms = await read_arms(conn, since, until)
        finally:
            await ledger.aclose()
        return render_arms(arms, args.format, since, until)

    _write(asyncio.run(read()), args.output)
    return 0


async def _bring_up_to_date(dsn: str) -> None:
    """Open the ledger once: that migrates its schema and fills its rollup."""
    from spillgate.ledger.store import Ledger

    ledger = await Ledger.open(dsn)
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


