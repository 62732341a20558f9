"""One way to a cost report, for `spillgate report` and GET /admin/report alike.

Both only choose a window and the inputs (ledger DSN, price book, hardware profile, reference
model); `gather_report` reads the ledger's sums in the calling (worker) thread with its own
connections and hands them to the pure builders in figures.py; rendering is the caller's
`render` (render.py), run in the same thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from spillgate.catalog import Catalog
from spillgate.costing.hardware import HardwareProfile, get_profile, load_profiles
from spillgate.costing.pricing import PriceBook
from spillgate.ledger.rollup import Views
from spillgate.reports.batches import batches_off_loop
from spillgate.reports.cache_savings import savings_off_loop
from spillgate.reports.figures import Bucket, Period, as_utc, report_from_views
from spillgate.reports.query import report_off_loop
from spillgate.settings import Settings

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class ReportSources:
    """What the endpoint reads besides the ledger; derived from the node's settings."""

    hardware_profile: HardwareProfile
    reference_model: str
    units: int

    @classmethod
    def from_settings(cls, settings: Settings, *, hardware: str | None = None,
                      reference: str | None = None) -> ReportSources:
        """The node's profile and reference model, unless the caller names others."""
        profiles = load_profiles(settings.models_dir / "hardware.yaml")
        catalog = Catalog.load(settings.models_dir / "catalog.yaml")
        return cls(
            get_profile(profiles, hardware or settings.cost.hardware_profile),
            reference or reference_model(settings, catalog),
            settings.cost.units,
        )



@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) and the series step of one report."""

    since: datetime
    until: datetime
    bucket: Bucket


def gather_report(dsn: str, window: Window, book: PriceBook, sources: ReportSources,
                  render: Callable[[dict[str, Any]], T]) -> T:
    """Read the window's sums from the ledger at `dsn`, build the report, `render` it.

    Blocking (own event loop and connections): the node calls it through
    `asyncio.to_thread`, the CLI directly."""

    def build(views: Views, periods: list[Period]) -> dict[str, Any]:
        return report_from_views(
            views, periods, since=window.since, until=window.until, bucket=window.bucket,
            price_book=book, reference_model=sources.reference_model,
            hardware_profile=sources.hardware_profile, units=sources.units,
        )  # fmt: skip

    report = report_off_loop(dsn, window.since, window.until, build)
    saved = savings_off_loop(dsn, window.since, window.until)
    if saved["totals"]["hits"]:  # "saved by cache", in a report of a window with hits
        report["cache"] = saved
    batches = batches_off_loop(dsn, window.since, window.until)
    if batches["requests"]:  # batch tokens, cost, utilization added, idle cost absorbed
        report["batches"] = batches
    return render(report)
