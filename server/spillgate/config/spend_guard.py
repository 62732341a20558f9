"""`spend_guard:` the circuit breaker on paid spend (spillgate.tenancy.spend_guard)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from spillgate.config.base import StrictModel


class GuardLimits(StrictModel):
    limit_usd: Decimal | None = Field(
        None, gt=0, description="Paid spend (USD) within one window that trips the guard.")
    baseline_multiple: Decimal | None = Field(
        None, gt=1, description="Trip when one window's spend exceeds this multiple of the "
        "trailing baseline (the mean spend per window over the baseline_windows before it).")


class SpendGuardSettings(StrictModel):
    """A circuit breaker on paid spend: when it trips, `auto` routes stay local."""

    window_s: float = Field(60.0, gt=0, description="Sliding window the spend is summed over.")
    baseline_windows: int = Field(
        10, ge=1, description="Windows before the current one that make the trailing baseline.")
    min_usd: Decimal = Field(
        Decimal(0), ge=0, description="A window spending less than this never trips the baseline "
        "rule (a cent after a silent hour is no spike).")
    cooldown_s: float = Field(
        300.0, gt=0, description="Least time the guard stays open; it closes after that once "
        "the window's spend is back under the limits.")
    fallback: Literal["reject", "local"] = Field(
        "reject", description="While open, requests on paid-only routes: reject (429 "
        "spend_guard_open) or serve them from the route's `local` model when it names one.")
    node: GuardLimits = Field(default_factory=GuardLimits,
                              description="Limits on the whole node's paid spend.")
    per_key: GuardLimits = Field(default_factory=GuardLimits,
                                 description="The same limits applied to each key's spend.")

    @model_validator(mode="after")
    def _floor_with_baseline(self) -> SpendGuardSettings:
        if (self.node.baseline_multiple or self.per_key.baseline_multiple) and not self.min_usd:
            raise ValueError("spend_guard.min_usd: set a floor (USD per window) with "
                             "baseline_multiple; a quiet start is a baseline of zero, so any "
                             "spend would trip the guard")
        return self
