"""Capacity-planner report: what the node cost, what the API would have cost, and when a unit pays.

`report_from_views` is pure: it takes request sums split by tier, sensitive and spill and
by one more dimension each - UTC hour, key, tag set (rollup.Views) - and hardware periods,
and gives a JSON-ready dict (Decimal as exact strings, ratios as floats). The node reads
those views from the database (report_query.py); `build_report` folds raw rows (dicts, as
the ledger stores them) into the same views first. Every figure is a sum or a ratio of sums
of raw columns, so anyone can recompute it:

- tokens = prompt_tokens + completion_tokens (cached tokens are part of the prompt);
  a row is local or API by its `tier`.
- local busy cost = sum(cost_usd) of local rows (the cost clock's per-request share);
  idle cost = sum(idle_usd) of hardware periods; local total = busy + idle.
- $/1M local without idle = busy / local tokens; with idle = (busy + idle) / local tokens;
  API $/1M = API cost / API tokens; reference $/1M = the reference model's price for the
  local rows' own token mix (3:1 input:output if none).
- the two bases of OpenCost: usage basis = hardware cost of busy time (sum busy_usd of the
  periods) / local tokens; reservation basis = hardware cost of all uptime (busy_usd +
  idle_usd of the periods) / local tokens.
- utilization u = busy_s / (busy_s + idle_s) of the periods.
- break-even utilization: the node costs r $/s (periods' busy+idle USD over their seconds,
  or the profile's nominal rate when there are none) and serves v local tokens per busy
  second, so at utilization u local costs r / (v * u) * 1e6 $/1M; equal to the reference
  price at u* = r * 1e6 / (v * reference $/1M). u* > 1 means it cannot break even.
- drafts = sum(draft_usd) of every row: the hardware share of cascade drafts, kept on the
  row the request ended as (an escalated request is an API row whose draft ran locally);
  not in local busy (local $/1M stays local rows' cost over their tokens), in actual.
- savings = all-API counterfactual (sum counterfactual_usd of local rows + API cost) minus
  actual (API cost + local total + drafts).
- spill = API rows of non-sensitive requests whose route reason starts with `overflow`,
  `local_unavailable` (and the other capacity reasons of rollup.SPILL_REASONS); its spend
  and tokens per average month (scaled from the window) decide whether one more unit of the
  hardware profile pays for itself (plan.marginal_unit).
- unattributed = sum(unattributed_usd) of the periods: busy cost no request of this node
  carries (the share of other clients' sequences on the engine, and of requests that left
  the engine for a paid API); over the node's whole life local busy + unattributed =
  hardware busy, to the quantum (a window cuts requests and periods at different edges).
- power: the share of the periods' seconds priced at measured board power (the rest at the
  profile's nominal watts), when the ledger records it.

A window has at most MAX_BUCKETS buckets (WindowTooLarge otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from spillgate.costing.hardware import (
    SECONDS_PER_MONTH,
    HardwareProfile,
    cost_rate_usd_per_s,
    monthly_cost_usd,
)
from spillgate.costing.pricing import (
    MILLION,
    Price,
    PriceBook,
    blended_usd_per_million,
    decimal_text,
)
from spillgate.ledger import rollup
from spillgate.ledger.rollup import SPILL_REASONS, GroupKey, GroupSums, as_utc, is_sensitive
from spillgate.reports.plan import marginal_unit

__all__ = ["SPILL_REASONS", "as_utc", "build_report", "is_sensitive", "report_from_views"]

Bucket = Literal["hour", "day"]
MAX_BUCKETS = 10_000
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
ZERO = Decimal(0)


class WindowTooLarge(ValueError):
    """The window would have more than MAX_BUCKETS buckets."""


@dataclass(frozen=True, slots=True)
class Period:
    """Hardware cost of some time (one `hardware_periods` row, or their sum over an hour)."""

    started_at: datetime
    busy_s: float
    idle_s: float
    busy_usd: Decimal
    idle_usd: Decimal
    measured_s: float | None = None  # seconds priced at measured power; None: not recorded
    unattributed_usd: Decimal = ZERO


@dataclass(slots=True)
class Sums:
    """Running sums over request groups (and periods) from which every figure is derived."""

    requests: int = 0
    local_requests: int = 0
    cache_requests: int = 0  # answered by the response cache: neither tier served them
    local_prompt: int = 0
    local_cached: int = 0
    local_completion: int = 0
    api_tokens: int = 0
    local_usd: Decimal = ZERO
    api_usd: Decimal = ZERO
    draft_usd: Decimal = ZERO  # cascade drafts' hardware share, whatever tier the row
    counterfactual_usd: Decimal = ZERO
    nonsensitive_requests: int = 0
    nonsensitive_tokens: int = 0
    spill_requests: int = 0
    spill_tokens: int = 0
    spill_usd: Decimal = ZERO
    busy_s: float = 0.0
    idle_s: float = 0.0
    busy_usd: Decimal = ZERO
    idle_usd: Decimal = ZERO
    unattributed_usd: Decimal = ZERO
    measured_s: float | None = None

    @property
    def local_tokens(self) -> int:
        return self.local_prompt + self.local_completion

    def add_group(self, key: GroupKey, g: GroupSums) -> None:
        tokens = g.prompt_tokens + g.completion_tokens
        self.requests += g.requests
        self.draft_usd += g.draft_usd
        if key.tier == "cache":
            self.cache_requests += g.requests
        elif key.tier == "local":
            self.local_requests += g.requests
            self.local_prompt += g.prompt_tokens
            self.local_cached += g.cached_tokens
            self.local_completion += g.completion_tokens
            self.local_usd += g.cost_usd
            self.counterfactual_usd += g.counterfactual_usd
        else:
            self.api_tokens += tokens
            self.api_usd += g.cost_usd
        if not key.sensitive:
            self.nonsensitive_requests += g.requests
            self.nonsensitive_tokens += tokens
        if key.spill:
            self.spill_requests += g.requests
            self.spill_tokens += tokens
            self.spill_usd += g.cost_usd

    def add_period(self, period: Period) -> None:
        self.busy_s += period.busy_s
        self.idle_s += period.idle_s
        self.busy_usd += period.busy_usd
        self.idle_usd += period.idle_usd
        self.unattributed_usd += period.unattributed_usd
        if period.measured_s is not None:
            self.measured_s = (self.measured_s or 0.0) + period.measured_s


@dataclass(frozen=True, slots=True)
class ReportInputs:
    """What the report needs besides the data: window, price of the reference, hardware."""

    since: datetime
    until: datetime
    bucket: Bucket
    reference_model: str
    reference_price: Price
    profile: HardwareProfile
    units: int


def check_window(since: datetime, until: datetime, bucket: Bucket) -> tuple[datetime, datetime]:
    """The window in UTC; ValueError if empty or of an unknown bucket, WindowTooLarge if it
    has more than MAX_BUCKETS buckets (checked by arithmetic, before anything is built)."""
    if bucket not in _STEP:
        raise ValueError(f"bucket must be hour or day, got {bucket!r}")
    since, until = as_utc(since), as_utc(until)
    if until <= since:
        raise ValueError("until must be after since")
    count = -(-(until - bucket_start(since, bucket)) // _STEP[bucket])
    if count > MAX_BUCKETS:
        raise WindowTooLarge(f"the window has {count:,} {bucket} buckets; at most "
                             f"{MAX_BUCKETS:,}: shorten it or use bucket=day")  # fmt: skip
    return since, until


def build_report(
    rows: Iterable[Mapping[str, Any]],
    hardware_periods: Iterable[Mapping[str, Any]],
    *,
    since: datetime,
    until: datetime,
    bucket: Bucket = "hour",
    price_book: PriceBook,
    reference_model: str,
    hardware_profile: HardwareProfile,
    units: int = 1,
) -> dict[str, Any]:
    """The report over raw rows and periods (dicts as the ledger stores them)."""
    since, until = check_window(since, until, bucket)
    groups = rollup.fold(r for r in rows if since <= as_utc(r["started_at"]) < until)
    periods = [p for p in map(normalize_period, hardware_periods) if since <= p.started_at < until]
    return report_from_views(
        rollup.Views().add(groups), periods, since=since, until=until, bucket=bucket,
        price_book=price_book, reference_model=reference_model,
        hardware_profile=hardware_profile, units=units,
    )  # fmt: skip


def report_from_views(
    views: rollup.Views,
    periods: Iterable[Period],
    *,
    since: datetime,
    until: datetime,
    bucket: Bucket = "hour",
    price_book: PriceBook,
    reference_model: str,
    hardware_profile: HardwareProfile,
    units: int = 1,
) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (see the module docstring for every formula).

    `views` and `periods` must already be limited to the window."""
    since, until = check_window(since, until, bucket)
    ctx = ReportInputs(since, until, bucket, reference_model,
                       price_book.price_for(reference_model, until), hardware_profile, units)
    totals = Sums()
    buckets = {start: Sums() for start in bucket_starts(since, until, bucket)}
    by_key: dict[str, Sums] = {}
    by_tag: dict[str, Sums] = {}
    for key, sums in views.hours.items():
        totals.add_group(key, sums)
        buckets[bucket_start(max(key.hour, since), bucket)].add_group(key, sums)
    for key, sums in views.keys.items():
        by_key.setdefault(key.key_id or "(none)", Sums()).add_group(key, sums)
    for key, sums in views.tags.items():
        for pair in key.tag_pairs():
            by_tag.setdefault(pair, Sums()).add_group(key, sums)
    for period in periods:
        totals.add_period(period)
        buckets[bucket_start(max(period.started_at, since), bucket)].add_period(period)
    window_s = Decimal(repr((until - since).total_seconds()))
    totals_out = figures(totals, ctx) | spill(totals, ctx, window_s)
    return {
        "window": {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "bucket": bucket,
            "seconds": decimal_text(window_s),
        },
        "assumptions": assumptions(ctx),
        "verdict": verdict(totals_out),
        "totals": totals_out,
        "series": [{"start": s.isoformat()} | figures(b, ctx) for s, b in buckets.items()],
        "by_key": {k: money(s) for k, s in sorted(by_key.items())},
        "by_tag": {k: money(s) for k, s in sorted(by_tag.items())},
    }


def verdict(t: Mapping[str, Any]) -> dict[str, Any]:
    """The planner's answer in a few fields (rendered as the first line of md and html)."""
    u, be = t["utilization"], t["break_even_utilization"]
    return {
        "savings_usd": t["savings_usd"],
        "savings_share": t["savings_share"],
        "utilization": u,
        "break_even_utilization": be,
        "local_pays": None if u is None or be is None else u >= be,
        "one_more_unit_pays": t["one_more_unit_pays"],
        "one_more_unit_net_monthly_usd": t["one_more_unit_net_monthly_usd"],
    }


def assumptions(ctx: ReportInputs) -> dict[str, Any]:
    p = ctx.reference_price
    return {
        "reference_model": ctx.reference_model,
        "reference_price_usd_per_million": {
            "input": decimal_text(p.input),
            "cached_input": decimal_text(p.cached_input),
            "output": decimal_text(p.output),
            "effective_from": p.effective_from.isoformat(),
        },
        "hardware_profile": ctx.profile.name,
        "units": ctx.units,
        "unit_monthly_usd": decimal_text(monthly_cost_usd(ctx.profile, 1)),
        "unit_tokens_per_second": decimal_text(ctx.profile.tokens_per_second),
    }


def money(s: Sums) -> dict[str, Any]:
    """Per-key / per-tag breakdown."""
    return {
        "requests": s.requests,
        "local_tokens": s.local_tokens,
        "api_tokens": s.api_tokens,
        "local_usd": decimal_text(s.local_usd),
        "api_usd": decimal_text(s.api_usd),
        "draft_usd": decimal_text(s.draft_usd),
        "cost_usd": decimal_text(s.local_usd + s.api_usd + s.draft_usd),
        "all_api_usd": decimal_text(s.counterfactual_usd + s.api_usd),
    }


def figures(s: Sums, ctx: ReportInputs) -> dict[str, Any]:
    """Tokens, cost, $/1M, utilization, break-even and savings for one set of sums."""
    ref = blended_usd_per_million(
        ctx.reference_price, s.local_prompt, s.local_cached, s.local_completion
    )
    local_total = s.local_usd + s.idle_usd
    all_api = s.counterfactual_usd + s.api_usd
    actual = s.api_usd + local_total + s.draft_usd
    seconds = Decimal(repr(s.busy_s + s.idle_s))
    return {
        "requests": s.requests,
        "local_requests": s.local_requests,
        "api_requests": s.requests - s.local_requests - s.cache_requests,
        "cache_requests": s.cache_requests,
        "local_tokens": s.local_tokens,
        "local_cached_tokens": s.local_cached,
        "api_tokens": s.api_tokens,
        "local_busy_usd": decimal_text(s.local_usd),
        "idle_usd": decimal_text(s.idle_usd),
        "local_total_usd": decimal_text(local_total),
        "api_usd": decimal_text(s.api_usd),
        "draft_usd": decimal_text(s.draft_usd),
        "hardware_busy_usd": decimal_text(s.busy_usd),
        "unattributed_usd": decimal_text(s.unattributed_usd),
        "hardware_total_usd": decimal_text(s.busy_usd + s.idle_usd),
        "busy_s": s.busy_s,
        "idle_s": s.idle_s,
        "local_usd_per_million": per_million(s.local_usd, s.local_tokens),
        "local_usd_per_million_with_idle": per_million(local_total, s.local_tokens),
        "usage_basis_usd_per_million": per_million(s.busy_usd, s.local_tokens),
        "reservation_basis_usd_per_million": per_million(s.busy_usd + s.idle_usd,
                                                         s.local_tokens),
        "api_usd_per_million": per_million(s.api_usd, s.api_tokens),
        "reference_usd_per_million": decimal_text(ref),
        "utilization": ratio(Decimal(repr(s.busy_s)), seconds),
        "break_even_utilization": break_even_utilization(s, ctx, ref),
        "measured_power_share": None if s.measured_s is None else ratio(
            Decimal(repr(s.measured_s)), seconds),
        "all_api_usd": decimal_text(all_api),
        "actual_usd": decimal_text(actual),
        "savings_usd": decimal_text(all_api - actual),
        "savings_share": ratio(all_api - actual, all_api),
    }  # fmt: skip


def spill(s: Sums, ctx: ReportInputs, window_s: Decimal) -> dict[str, Any]:
    """Spill share and spend, and whether one more unit would pay for itself."""
    monthly = s.spill_usd * SECONDS_PER_MONTH / window_s
    tokens_monthly = s.spill_tokens * SECONDS_PER_MONTH / window_s
    capacity = ctx.profile.tokens_per_second * SECONDS_PER_MONTH
    unit = marginal_unit(tokens_monthly, monthly, monthly_cost_usd(ctx.profile, 1),
                         capacity if capacity > 0 else None)  # fmt: skip
    return {
        "spill_requests": s.spill_requests,
        "spill_tokens": s.spill_tokens,
        "spill_usd": decimal_text(s.spill_usd),
        "spill_share_requests": ratio(Decimal(s.spill_requests), Decimal(s.nonsensitive_requests)),
        "spill_share_tokens": ratio(Decimal(s.spill_tokens), Decimal(s.nonsensitive_tokens)),
        "spill_monthly_usd": decimal_text(monthly),
        "one_more_unit_monthly_usd": decimal_text(unit.unit_monthly_usd),
        "one_more_unit_saves_monthly_usd": decimal_text(unit.saved_monthly_usd),
        "one_more_unit_net_monthly_usd": decimal_text(unit.net_monthly_usd),
        "one_more_unit_pays": unit.pays,
    }


def break_even_utilization(s: Sums, ctx: ReportInputs, ref: Decimal) -> float | None:
    """u* = r * 1e6 / (v * ref): None without local tokens, busy time or a reference price."""
    seconds = Decimal(repr(s.busy_s + s.idle_s))
    if seconds > 0:
        rate = (s.busy_usd + s.idle_usd) / seconds
    else:
        rate = cost_rate_usd_per_s(ctx.profile, ctx.units, None)
    if s.busy_s <= 0 or s.local_tokens == 0 or ref == 0:
        return None
    tokens_per_busy_s = s.local_tokens / Decimal(repr(s.busy_s))
    return float(rate * MILLION / (tokens_per_busy_s * ref))


def per_million(usd: Decimal, tokens: int) -> str | None:
    return None if tokens == 0 else decimal_text(usd * MILLION / tokens)


def ratio(part: Decimal, whole: Decimal) -> float | None:
    return None if whole == 0 else float(part / whole)


# --- normalization and buckets -------------------------------------------------------------
def to_money(value: Any) -> Decimal:
    return ZERO if value is None else Decimal(str(value))


def normalize_period(raw: Mapping[str, Any]) -> Period:
    measured = raw.get("measured_s")
    return Period(
        started_at=as_utc(raw["started_at"]),
        busy_s=float(raw.get("busy_s") or 0.0),
        idle_s=float(raw.get("idle_s") or 0.0),
        busy_usd=to_money(raw.get("busy_usd")),
        idle_usd=to_money(raw.get("idle_usd")),
        measured_s=None if measured is None else float(measured),
        unattributed_usd=to_money(raw.get("unattributed_usd")),
    )


def bucket_start(moment: datetime, bucket: Bucket) -> datetime:
    if bucket == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[datetime]:
    starts, current = [], bucket_start(since, bucket)
    while current < until:
        starts.append(current)
        current += _STEP[bucket]
    return starts
