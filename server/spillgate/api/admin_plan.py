"""GET /admin/plan: the `spillgate plan` calculator over HTTP, for the console.

?tokens_per_day=&peak_factor=3&hardware=<profile>&api_model=<provider/model>
 &hybrid_percentile= → {"plan": Plan.to_dict(), "sweep": [...]}, the sweep being the three
strategies' monthly totals from zero to past the break-even load (the chart's points).
GET /admin/plan/options lists the hardware profiles and priced models to choose from, with
the node's own as defaults.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request

from spillgate.costing.hardware import load_profiles
from spillgate.costing.pricing import PriceBook, decimal_text
from spillgate.errors import InvalidRequest
from spillgate.reports.gather import ReportSources
from spillgate.reports.plan import Plan, plan_sweep, project
from spillgate.settings import Settings


def _decimal(text: str | None, name: str, default: Decimal | None = None) -> Decimal:
    if text is None or text == "":
        if default is None:
            raise InvalidRequest(f"{name} is required", param=name)
        return default
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest(f"{name} must be a number", param=name) from None
    if not value.is_finite():
        raise InvalidRequest(f"{name} must be a finite number", param=name)
    return value


def _sweep_point(plan: Plan) -> dict[str, str]:
    return {"tokens_per_day": decimal_text(plan.tokens_per_day),
            **{s.name: decimal_text(s.total_monthly_usd) for s in plan.strategies}}


def admin_plan_router() -> APIRouter:
    router = APIRouter()

    @router.get("/admin/plan/options")
    async def options(request: Request) -> dict[str, Any]:
        settings: Settings = request.app.state.settings
        src = ReportSources.from_settings(settings)
        profiles = load_profiles(settings.models_dir / "hardware.yaml")
        book = PriceBook.load(settings.models_dir / "pricing.yaml")
        return {"profiles": sorted(profiles), "api_models": sorted(book.models()),
                "hardware": src.hardware_profile.name, "api_model": src.reference_model}

    @router.get("/admin/plan")
    async def plan(request: Request, tokens_per_day: str | None = None,
                   peak_factor: str | None = None, hardware: str | None = None,
                   api_model: str | None = None,
                   hybrid_percentile: str | None = None) -> dict[str, Any]:
        settings: Settings = request.app.state.settings
        tokens = _decimal(tokens_per_day, "tokens_per_day")
        factor = _decimal(peak_factor, "peak_factor", Decimal(3))
        pct = None if not hybrid_percentile else _decimal(hybrid_percentile,
                                                          "hybrid_percentile")
        profiles = load_profiles(settings.models_dir / "hardware.yaml")
        name = hardware or settings.cost.hardware_profile
        if name not in profiles:
            raise InvalidRequest("hardware: not a profile of hardware.yaml", param="hardware")
        profile = profiles[name]
        book = PriceBook.load(settings.models_dir / "pricing.yaml")
        model = api_model or ReportSources.from_settings(settings).reference_model
        if model not in book.models():
            raise InvalidRequest("api_model: not a model of pricing.yaml", param="api_model")
        if profile.tokens_per_second <= 0:
            raise InvalidRequest("hardware: this profile has no tokens_per_second",
                                 param="hardware")

        def at(load: Decimal) -> Plan:
            return project(load, factor, profile, profile.tokens_per_second,
                           book.price_for(model), hybrid_percentile=pct)

        try:
            result = at(tokens)
        except ValueError as exc:  # our own range checks, which name no input value
            raise InvalidRequest(str(exc), param="tokens_per_day") from None
        return {"plan": result.to_dict(),
                "sweep": [_sweep_point(p) for p in plan_sweep(result, at)]}

    return router
