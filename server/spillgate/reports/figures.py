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
- unattributed = sum(unattributed_usd) of the periods: busy cost no request of this
  node's pool carries (the share of other clients' sequences on the engine, and of
  requests that left the engine for a paid API); over the pool's whole life local busy +
  unattributed = hardware busy, to the quantum (a window cuts requests and periods at
  different edges). With several gateway processes in a pool (costing/pool.py) the other
  processes' rows move their requests' share out of it, so it can dip below zero while
  the holder's view of their sequences lags.
- power: the share of the periods' seconds priced at measured board power (the rest at the
  profile's nominal watts), when the ledger records it.

A window has at most MAX_BUCKETS buckets (WindowTooLarge otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

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
from spillgate.ledger.rollup import SPILL_REASONS, as_utc, is_sensitive
from spillgate.reports.plan import marginal_unit
from spillgate.reports.sums import Period, Sums, normalize_period
from spillgate.reports.window import (
    MAX_BUCKETS,
    Bucket,
    WindowTooLarge,
    bucket_start,
    bucket_starts,
    check_window,
)

# The window and the sums live in window.py and sums.py; callers import them from here too.
__all__ = [
    "MAX_BUCKETS", "SPILL_REASONS", "Bucket", "Period", "WindowTooLarge", "as_utc",
    "build_report", "check_window", "is_sensitive", "report_from_views",
]


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


