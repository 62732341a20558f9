"""Capacity-planner report: what the node cost, what the API would have cost, and when a GPU pays.

`build_report` is pure: it takes ledger rows and hardware periods (dicts, as the ledger
returns them) and gives a JSON-ready dict (Decimal as exact strings, ratios as floats).
Every figure is a sum or a ratio of sums of raw columns, so anyone can recompute it:

- tokens = prompt_tokens + completion_tokens (cached tokens are part of the prompt);
  a row is local or API by its `tier`.
- local busy cost = sum(cost_usd) of local rows (the cost clock's per-request share);
  idle cost = sum(idle_usd) of hardware periods; local total = busy + idle.
- $/1M local without idle = busy / local tokens; with idle = (busy + idle) / local tokens;
  API $/1M = API cost / API tokens; reference $/1M = the reference model's price for the
  local rows' own token mix (3:1 input:output if none).
- utilization u = busy_s / (busy_s + idle_s) of the periods.
- break-even utilization: the node costs r $/s (periods' busy+idle USD over their seconds,
  or the profile's nominal rate when there are none) and serves v local tokens per busy
  second, so at utilization u local costs r / (v * u) * 1e6 $/1M; equal to the reference
  price at u* = r * 1e6 / (v * reference $/1M). u* > 1 means it cannot break even.
- savings = all-API counterfactual (sum counterfactual_usd of local rows + API cost) minus
  actual (API cost + local total).
- spill = API rows of non-sensitive requests whose route reason starts with `overflow` or
  `local_unavailable`; its spend per average month (scaled from the window) is compared with
  one more unit of the hardware profile per month.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from spillgate.accounting.hardware import (
    SECONDS_PER_MONTH,
    HardwareProfile,
    cost_rate_usd_per_s,
    monthly_cost_usd,
)
from spillgate.accounting.pricing import (
    MILLION,
    Price,
    PriceBook,
    blended_usd_per_million,
    decimal_text,
)

Bucket = Literal["hour", "day"]
SPILL_REASONS = ("overflow", "local_unavailable", "local_queue_full", "local_context_exceeded",
                 "telemetry_unknown")
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Row:
    """The columns of one `requests` row that the report reads, normalized."""

    started_at: datetime
    tier: str
    key_id: str
    tags: Mapping[str, str]
    reason: str
    sensitive: bool
    prompt: int
    cached: int
    completion: int
    cost_usd: Decimal
    counterfactual_usd: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion

    @property
    def spilled(self) -> bool:
        return self.tier == "api" and not self.sensitive and self.reason.startswith(SPILL_REASONS)


@dataclass(frozen=True, slots=True)
class Period:
    started_at: datetime
    busy_s: float
    idle_s: float
    busy_usd: Decimal
    idle_usd: Decimal


@dataclass(slots=True)
class Sums:
    """Running sums over rows (and periods) from which every figure is derived."""

    requests: int = 0
    local_requests: int = 0
    local_prompt: int = 0
    local_cached: int = 0
    local_completion: int = 0
    api_tokens: int = 0
    local_usd: Decimal = ZERO
    api_usd: Decimal = ZERO
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

    @property
    def local_tokens(self) -> int:
        return self.local_prompt + self.local_completion

    def add_row(self, row: Row) -> None:
        self.requests += 1
        if row.tier == "local":
            self.local_requests += 1
            self.local_prompt += row.prompt
            self.local_cached += row.cached
            self.local_completion += row.completion
            self.local_usd += row.cost_usd
            self.counterfactual_usd += row.counterfactual_usd
        else:
            self.api_tokens += row.tokens
            self.api_usd += row.cost_usd
        if not row.sensitive:
            self.nonsensitive_requests += 1
            self.nonsensitive_tokens += row.tokens
        if row.spilled:
            self.spill_requests += 1
            self.spill_tokens += row.tokens
            self.spill_usd += row.cost_usd

    def add_period(self, period: Period) -> None:
        self.busy_s += period.busy_s
        self.idle_s += period.idle_s
        self.busy_usd += period.busy_usd
        self.idle_usd += period.idle_usd


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
    """The whole report as a JSON-ready dict (see the module docstring for every formula)."""
    if bucket not in _STEP:
        raise ValueError(f"bucket must be hour or day, got {bucket!r}")
    since, until = as_utc(since), as_utc(until)
    if until <= since:
        raise ValueError("until must be after since")
    ctx = ReportInputs(
        since,
        until,
        bucket,
        reference_model,
        price_book.price_for(reference_model, until),
        hardware_profile,
        units,
    )
    kept = [r for r in map(normalize_row, rows) if r is not None and since <= r.started_at < until]
    periods = [p for p in map(normalize_period, hardware_periods) if since <= p.started_at < until]
    totals = Sums()
    buckets = {start: Sums() for start in bucket_starts(since, until, bucket)}
    by_key: dict[str, Sums] = {}
    by_tag: dict[str, Sums] = {}
    for row in kept:
        totals.add_row(row)
        buckets[bucket_start(row.started_at, bucket)].add_row(row)
        by_key.setdefault(row.key_id, Sums()).add_row(row)
        for k, v in row.tags.items():
            by_tag.setdefault(f"{k}={v}", Sums()).add_row(row)
    for period in periods:
        totals.add_period(period)
        buckets[bucket_start(max(period.started_at, since), bucket)].add_period(period)
    window_s = Decimal(repr((until - since).total_seconds()))
    return {
        "window": {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "bucket": bucket,
            "seconds": decimal_text(window_s),
        },
        "assumptions": assumptions(ctx),
        "totals": figures(totals, ctx) | spill(totals, ctx, window_s),
        "series": [{"start": s.isoformat()} | figures(b, ctx) for s, b in buckets.items()],
        "by_key": {k: money(s) for k, s in sorted(by_key.items())},
        "by_tag": {k: money(s) for k, s in sorted(by_tag.items())},
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
    }


def money(s: Sums) -> dict[str, Any]:
    """Per-key / per-tag breakdown."""
    return {
        "requests": s.requests,
        "local_tokens": s.local_tokens,
        "api_tokens": s.api_tokens,
        "local_usd": decimal_text(s.local_usd),
        "api_usd": decimal_text(s.api_usd),
        "cost_usd": decimal_text(s.local_usd + s.api_usd),
        "all_api_usd": decimal_text(s.counterfactual_usd + s.api_usd),
    }


def figures(s: Sums, ctx: ReportInputs) -> dict[str, Any]:
    """Tokens, cost, $/1M, utilization, break-even and savings for one set of sums."""
    ref = blended_usd_per_million(
        ctx.reference_price, s.local_prompt, s.local_cached, s.local_completion
    )
    local_total = s.local_usd + s.idle_usd
    all_api = s.counterfactual_usd + s.api_usd
    actual = s.api_usd + local_total
    return {
        "requests": s.requests,
        "local_requests": s.local_requests,
        "api_requests": s.requests - s.local_requests,
        "local_tokens": s.local_tokens,
        "local_cached_tokens": s.local_cached,
        "api_tokens": s.api_tokens,
        "local_busy_usd": decimal_text(s.local_usd),
        "idle_usd": decimal_text(s.idle_usd),
        "local_total_usd": decimal_text(local_total),
        "api_usd": decimal_text(s.api_usd),
        "hardware_busy_usd": decimal_text(s.busy_usd),
        "busy_s": s.busy_s,
        "idle_s": s.idle_s,
        "local_usd_per_million": per_million(s.local_usd, s.local_tokens),
        "local_usd_per_million_with_idle": per_million(local_total, s.local_tokens),
        "api_usd_per_million": per_million(s.api_usd, s.api_tokens),
        "reference_usd_per_million": decimal_text(ref),
        "utilization": ratio(Decimal(repr(s.busy_s)), Decimal(repr(s.busy_s + s.idle_s))),
        "break_even_utilization": break_even_utilization(s, ctx, ref),
        "all_api_usd": decimal_text(all_api),
        "actual_usd": decimal_text(actual),
        "savings_usd": decimal_text(all_api - actual),
        "savings_share": ratio(all_api - actual, all_api),
    }


def spill(s: Sums, ctx: ReportInputs, window_s: Decimal) -> dict[str, Any]:
    """Spill share and spend, against one more unit of hardware per month."""
    monthly = s.spill_usd * SECONDS_PER_MONTH / window_s
    unit = monthly_cost_usd(ctx.profile, 1)
    return {
        "spill_requests": s.spill_requests,
        "spill_tokens": s.spill_tokens,
        "spill_usd": decimal_text(s.spill_usd),
        "spill_share_requests": ratio(Decimal(s.spill_requests), Decimal(s.nonsensitive_requests)),
        "spill_share_tokens": ratio(Decimal(s.spill_tokens), Decimal(s.nonsensitive_tokens)),
        "spill_monthly_usd": decimal_text(monthly),
        "one_more_unit_monthly_usd": decimal_text(unit),
        "one_more_unit_pays": monthly > unit,
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


# --- normalization of ledger rows ---------------------------------------------------------
def as_utc(value: datetime | str) -> datetime:
    """Aware UTC datetime; naive values (SQLite) are taken as UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_money(value: Any) -> Decimal:
    return ZERO if value is None else Decimal(str(value))


def is_sensitive(value: Any) -> bool:
    """`sensitivity` is empty/None for ordinary data, else the entity classes found."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return bool(json.loads(text))
        return text not in ("", "none", "public")
    return bool(value)


def normalize_row(raw: Mapping[str, Any]) -> Row | None:
    """A Row, or None for a reservation that has not settled yet (no final cost)."""
    if raw.get("state") in ("reserved", "pending"):
        return None
    tags = raw.get("tags") or {}
    return Row(
        started_at=as_utc(raw["started_at"]),
        tier=str(raw.get("tier") or "local"),
        key_id=str(raw.get("key_id") or "(none)"),
        tags=json.loads(tags) if isinstance(tags, str) else dict(tags),
        reason=str(raw.get("reason") or ""),
        sensitive=is_sensitive(raw.get("sensitivity")),
        prompt=int(raw.get("prompt_tokens") or 0),
        cached=int(raw.get("cached_tokens") or 0),
        completion=int(raw.get("completion_tokens") or 0),
        cost_usd=to_money(raw.get("cost_usd")),
        counterfactual_usd=to_money(raw.get("counterfactual_usd")),
    )


def normalize_period(raw: Mapping[str, Any]) -> Period:
    return Period(
        started_at=as_utc(raw["started_at"]),
        busy_s=float(raw.get("busy_s") or 0.0),
        idle_s=float(raw.get("idle_s") or 0.0),
        busy_usd=to_money(raw.get("busy_usd")),
        idle_usd=to_money(raw.get("idle_usd")),
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
