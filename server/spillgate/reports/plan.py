"""`spillgate plan`: monthly cost of all-API, all-local and hybrid for a projected load.

Load model. Traffic averages `avg = tokens_per_day / 86400` tokens/s and peaks at
`peak = avg * peak_factor`. Over a day, the load sorted from highest to lowest (the load
duration curve) is taken as a straight line from `peak` down to `m = avg * (2 - F)` when
F = peak_factor <= 2, or down to 0 at a fraction 2/F of the day (and 0 afterwards) when
F > 2; both have the right mean. With local capacity `c` tokens/s, the traffic above `c`
spills to the API:

    c >= peak: 0        c <= m: avg - c        else: (peak - c) * x_c / 2,
    x_c = L * (peak - c) / (peak - m)          (L = 1, or 2/F when F > 2)

Strategies (monthly = 30.4375 days; hardware at nominal power, see hardware.py):
- all-API: every token at the API model's blended price (3:1 input:output by default).
- all-local: ceil(peak / tokens_per_second_per_gpu) units, no API spend.
- hybrid: units for the average load (or a percentile of the curve), spill above it.

Break-even: one unit costs G a month and, sized for peak, serves k = tps * 86400 / F tokens
a day; the API costs a = blended / 1e6 * 30.4375 per (token/day) a month. All-local first
costs no more than all-API at T* = G / a tokens/day, provided T* <= k (otherwise even a
fully used unit is dearer than the API, and there is no break-even).

One more unit (`marginal_unit`, for a running node's report): it would take over the
traffic that now spills to the API, up to its own capacity, and save what that traffic
costs at the API's observed price; it pays for itself when that saving exceeds the unit's
monthly cost G:  saved = spill_usd * min(1, capacity / spill_tokens),  pays = saved > G.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from spillgate.costing.hardware import HardwareProfile, monthly_cost_usd
from spillgate.costing.pricing import DEFAULT_INPUT_SHARE, MILLION, Price, decimal_text

DAY_S = Decimal(86400)
DAYS_PER_MONTH = Decimal("30.4375")


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    units: int
    local_tokens_per_day: Decimal
    api_tokens_per_day: Decimal
    hardware_monthly_usd: Decimal
    api_monthly_usd: Decimal

    @property
    def total_monthly_usd(self) -> Decimal:
        return self.hardware_monthly_usd + self.api_monthly_usd


@dataclass(frozen=True, slots=True)
class Plan:
    tokens_per_day: Decimal
    peak_factor: Decimal
    profile: str
    tokens_per_second_per_unit: Decimal
    api_model: str
    api_usd_per_million: Decimal
    unit_monthly_usd: Decimal
    average_tps: Decimal
    peak_tps: Decimal
    hybrid_sizing: str
    all_api: Strategy
    all_local: Strategy
    hybrid: Strategy
    break_even_tokens_per_day: Decimal | None

    @property
    def strategies(self) -> tuple[Strategy, Strategy, Strategy]:
        return (self.all_api, self.all_local, self.hybrid)

    def cheapest(self) -> Strategy:
        return min(self.strategies, key=lambda s: s.total_monthly_usd)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: Decimal as strings."""

        def strat(s: Strategy) -> dict[str, Any]:
            return {
                "units": s.units,
                "local_tokens_per_day": decimal_text(s.local_tokens_per_day),
                "api_tokens_per_day": decimal_text(s.api_tokens_per_day),
                "hardware_monthly_usd": decimal_text(s.hardware_monthly_usd),
                "api_monthly_usd": decimal_text(s.api_monthly_usd),
                "total_monthly_usd": decimal_text(s.total_monthly_usd),
            }

        be = self.break_even_tokens_per_day
        return {
            "tokens_per_day": decimal_text(self.tokens_per_day),
            "peak_factor": decimal_text(self.peak_factor),
            "profile": self.profile,
            "tokens_per_second_per_unit": decimal_text(self.tokens_per_second_per_unit),
            "api_model": self.api_model,
            "api_usd_per_million": decimal_text(self.api_usd_per_million),
            "unit_monthly_usd": decimal_text(self.unit_monthly_usd),
            "average_tps": decimal_text(self.average_tps),
            "peak_tps": decimal_text(self.peak_tps),
            "hybrid_sizing": self.hybrid_sizing,
            "strategies": {s.name: strat(s) for s in self.strategies},
            "cheapest": self.cheapest().name,
            "break_even_tokens_per_day": None if be is None else decimal_text(be),
        }


@dataclass(frozen=True, slots=True)
class MarginalUnit:
    saved_monthly_usd: Decimal
    unit_monthly_usd: Decimal

    @property
    def net_monthly_usd(self) -> Decimal:
        return self.saved_monthly_usd - self.unit_monthly_usd

    @property
    def pays(self) -> bool:
        return self.saved_monthly_usd > self.unit_monthly_usd


def marginal_unit(spill_tokens_monthly: Decimal, spill_usd_monthly: Decimal,
                  unit_monthly_usd: Decimal,
                  unit_tokens_monthly: Decimal | None) -> MarginalUnit:  # fmt: skip
    """What one more unit would save a month by serving the spilled traffic (module doc).
    `unit_tokens_monthly` None: capacity unknown, taken as enough for all of it."""
    absorbed = Decimal(1)
    if unit_tokens_monthly is not None and spill_tokens_monthly > unit_tokens_monthly:
        absorbed = unit_tokens_monthly / spill_tokens_monthly
    return MarginalUnit(spill_usd_monthly * absorbed, unit_monthly_usd)


def blended_price(price: Price, input_share: Decimal, cached_share: Decimal) -> Decimal:
    """USD per 1M tokens for a mix: `input_share` of tokens are prompt, `cached_share` of
    those hit the provider's prompt cache."""
    prompt = (1 - cached_share) * price.input + cached_share * price.cached_input
    return input_share * prompt + (1 - input_share) * price.output


def units_for(load: Decimal, per_unit: Decimal) -> int:
    """Whole units needed to serve `load` (same rate unit as `per_unit`)."""
    return int((load / per_unit).to_integral_value(ROUND_CEILING))


def spill_tps(avg: Decimal, peak_factor: Decimal, capacity: Decimal) -> Decimal:
    """Mean load above `capacity` under the linear load duration curve (module doc).

    Any unit of rate works (tokens/s, tokens/day) as long as `avg` and `capacity` share it.
    """
    peak = avg * peak_factor
    floor_load, length = _curve(avg, peak_factor)
    if capacity >= peak:
        return Decimal(0)
    if capacity <= floor_load:
        return avg - capacity
    crossing = length * (peak - capacity) / (peak - floor_load)
    return (peak - capacity) * crossing / 2


def load_at_percentile(avg: Decimal, peak_factor: Decimal, percentile: Decimal) -> Decimal:
    """The load covered `percentile` (0..1) of the time: the curve at x = 1 - percentile."""
    peak = avg * peak_factor
    floor_load, length = _curve(avg, peak_factor)
    x = 1 - percentile
    if x >= length:
        return floor_load
    return peak - (peak - floor_load) * x / length


def _curve(avg: Decimal, peak_factor: Decimal) -> tuple[Decimal, Decimal]:
    """(lowest load, fraction of the day over which the curve falls to it)."""
    if peak_factor <= 2:
        return avg * (2 - peak_factor), Decimal(1)
    return Decimal(0), 2 / peak_factor


def project(
    tokens_per_day: Decimal | int,
    peak_factor: Decimal | int,
    profile: HardwareProfile,
    gpus_throughput_tps: Decimal | int,
    api_price: Price,
    *,
    input_share: Decimal = DEFAULT_INPUT_SHARE,
    cached_share: Decimal = Decimal(0),
    hybrid_percentile: Decimal | None = None,
) -> Plan:
    """Monthly cost of the three strategies and the break-even load (module docstring).

    `gpus_throughput_tps` is one unit's throughput in tokens/s; `hybrid_percentile` (0..1)
    sizes the hybrid's local part for that percentile of the load curve instead of the mean.
    """
    tokens = Decimal(tokens_per_day)
    factor = Decimal(peak_factor)
    per_unit = Decimal(gpus_throughput_tps)
    _check(tokens, factor, per_unit, hybrid_percentile)
    blended = blended_price(api_price, input_share, cached_share)
    unit_month = monthly_cost_usd(profile, 1)
    avg = tokens / DAY_S
    sizing = "average" if hybrid_percentile is None else f"p{decimal_text(hybrid_percentile * 100)}"
    per_unit_day = per_unit * DAY_S  # one unit's capacity in tokens/day
    target = (
        tokens
        if hybrid_percentile is None
        else load_at_percentile(tokens, factor, hybrid_percentile)
    )

    def strategy(name: str, units: int) -> Strategy:
        # The curve is scale-free: work in tokens/day so whole loads stay exact.
        api_tokens = spill_tps(tokens, factor, units * per_unit_day)
        return Strategy(
            name=name,
            units=units,
            local_tokens_per_day=tokens - api_tokens,
            api_tokens_per_day=api_tokens,
            hardware_monthly_usd=unit_month * units,
            api_monthly_usd=api_tokens * DAYS_PER_MONTH * blended / MILLION,
        )

    per_token_month = blended / MILLION * DAYS_PER_MONTH
    break_even = unit_month / per_token_month if per_token_month > 0 else None
    if break_even is not None and break_even > per_unit_day / factor:
        break_even = None
    return Plan(
        tokens_per_day=tokens,
        peak_factor=factor,
        profile=profile.name,
        tokens_per_second_per_unit=per_unit,
        api_model=api_price.model,
        api_usd_per_million=blended,
        unit_monthly_usd=unit_month,
        average_tps=avg,
        peak_tps=avg * factor,
        hybrid_sizing=sizing,
        all_api=strategy("all-api", 0),
        all_local=strategy("all-local", units_for(tokens * factor, per_unit_day)),
        hybrid=strategy("hybrid", units_for(target, per_unit_day)),
        break_even_tokens_per_day=break_even,
    )


def _check(tokens: Decimal, factor: Decimal, per_unit: Decimal, pct: Decimal | None) -> None:
    if tokens < 0:
        raise ValueError("tokens_per_day must be >= 0")
    if factor < 1:
        raise ValueError("peak_factor must be >= 1 (peak over average)")
    if per_unit <= 0:
        raise ValueError("tokens per second per unit must be > 0")
    if pct is not None and not 0 <= pct <= 1:
        raise ValueError("hybrid_percentile must be within 0..1")


def plan_sweep(plan: Plan, at: Callable[[Decimal], Plan], steps: int = 60) -> list[Plan]:
    """Plans from 0 to twice the load (or 1.5x the break-even, if further) for the chart."""
    top = plan.tokens_per_day * 2
    if plan.break_even_tokens_per_day is not None:
        top = max(top, plan.break_even_tokens_per_day * Decimal("1.5"))
    if top == 0:
        top = Decimal(1_000_000)
    return [at(top * i / steps) for i in range(steps + 1)]
