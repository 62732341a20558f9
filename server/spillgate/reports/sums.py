"""Running sums over the ledger's request groups and hardware periods, from which every
figure of the report is derived (spillgate.reports.figures)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from spillgate.ledger.rollup import GroupKey, GroupSums, as_utc

ZERO = Decimal(0)


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
