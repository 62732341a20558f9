"""Hardware cost profiles (models/hardware.yaml) and the node's cost per second, in Decimal.

A profile describes one *unit*: one GPU with its share of the server, or one CPU node. The
node's rate is `units` times the per-unit fixed rate, plus energy at the measured (NVML)
power when there is a reading, else at nominal power:

    owned:   fixed/s  = ((capex - residual) / amortization_months + fixed_monthly) / S_MONTH
    leased:  fixed/s  = usd_per_hour / 3600
    energy/s = (gpu_watts + units * host_watts) * pue * usd_per_kwh / 3_600_000
               (leased with power_included: no energy term)

where S_MONTH = 30.4375 days * 86400 s = 2,629,800 s (the average Gregorian month) and
gpu_watts is the measured board power of all the node's GPUs, or units * nominal_watts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from spillgate.costing.pricing import load_yaml_exact, to_decimal
from spillgate.errors import ConfigError

SECONDS_PER_MONTH = Decimal("30.4375") * 86400  # 2,629,800 s
SECONDS_PER_HOUR = Decimal(3600)
JOULES_PER_KWH = Decimal(3_600_000)


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """One unit's cost parameters; money and watts are Decimal, read exactly from YAML."""

    name: str
    kind: Literal["owned", "leased"]
    description: str = ""
    capex_usd: Decimal = Decimal(0)
    residual_usd: Decimal = Decimal(0)
    amortization_months: int = 36
    fixed_monthly_usd: Decimal = Decimal(0)
    usd_per_hour: Decimal = Decimal(0)
    power_included: bool = False
    nominal_watts: Decimal = Decimal(0)
    host_watts: Decimal = Decimal(0)
    pue: Decimal = Decimal(1)
    usd_per_kwh: Decimal = Decimal(0)
    tokens_per_second: Decimal = Decimal(0)

    @property
    def pays_energy(self) -> bool:
        return self.kind == "owned" or not self.power_included


def fixed_rate_usd_per_s(profile: HardwareProfile, units: int) -> Decimal:
    """The part of the rate that does not depend on power: amortization + fixed, or lease."""
    if profile.kind == "leased":
        per_unit = profile.usd_per_hour / SECONDS_PER_HOUR
    else:
        depreciation = (profile.capex_usd - profile.residual_usd) / profile.amortization_months
        per_unit = (depreciation + profile.fixed_monthly_usd) / SECONDS_PER_MONTH
    return per_unit * units


def energy_rate_usd_per_s(
    profile: HardwareProfile, units: int, power_watts: float | None
) -> Decimal:
    """Energy cost per second at measured GPU power (all GPUs), else at nominal power."""
    if not profile.pays_energy:
        return Decimal(0)
    gpu_watts = profile.nominal_watts * units if power_watts is None else _watts(power_watts)
    watts = gpu_watts + profile.host_watts * units
    return watts * profile.pue * profile.usd_per_kwh / JOULES_PER_KWH


def cost_rate_usd_per_s(profile: HardwareProfile, units: int,
                        power_watts: float | None) -> Decimal:
    """Total cost per second of `units` units of `profile` (see the module docstring)."""
    if units < 0:
        raise ValueError("units must be >= 0")
    return fixed_rate_usd_per_s(profile, units) + energy_rate_usd_per_s(profile, units,
                                                                        power_watts)


def check_units(profile: HardwareProfile, units: int) -> None:
    """0 units of a profile that costs money would price the node at $0: refuse it."""
    if units < 1 and monthly_cost_usd(profile, 1) > 0:
        raise ConfigError(
            f"cost.units: 0 units of profile {profile.name!r} would price this node at $0; "
            "a CPU-only node is 1 unit of a CPU profile"
        )


def monthly_cost_usd(profile: HardwareProfile, units: int) -> Decimal:
    """Cost of `units` units for one average month at nominal power (a planning worst case).

    The same formula as the per-second rate, multiplied out per month first so that round
    inputs give exact results (a lease of $1/h costs exactly $730.50 a month).
    """
    hours = SECONDS_PER_MONTH / SECONDS_PER_HOUR  # 730.5
    if profile.kind == "leased":
        fixed = profile.usd_per_hour * hours
    else:
        fixed = (profile.capex_usd - profile.residual_usd) / profile.amortization_months
        fixed += profile.fixed_monthly_usd
    energy = Decimal(0)
    if profile.pays_energy:
        watts = profile.nominal_watts + profile.host_watts
        energy = watts * profile.pue * profile.usd_per_kwh * hours / 1000
    return (fixed + energy) * units


def _watts(power_watts: float) -> Decimal:
    if power_watts < 0 or power_watts != power_watts:  # NaN check without math import
        raise ValueError(f"power_watts must be a number >= 0, got {power_watts!r}")
    return Decimal(repr(power_watts))


def load_profiles(path: Path) -> dict[str, HardwareProfile]:
    """Read every profile of hardware.yaml; ConfigError names the profile and field."""
    raw = load_yaml_exact(path)
    profiles = raw.get("profiles") if isinstance(raw, dict) else None
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{path}: expected a non-empty top-level `profiles:` mapping")
    return {
        str(name): _profile(f"{path}: {name}", str(name), body) for name, body in profiles.items()
    }


def get_profile(profiles: dict[str, HardwareProfile], name: str) -> HardwareProfile:
    try:
        return profiles[name]
    except KeyError:
        known = ", ".join(sorted(profiles))
        raise ConfigError(
            f"cost.hardware_profile: unknown profile {name!r} (known: {known})"
        ) from None


_MONEY_FIELDS = (
    "capex_usd",
    "residual_usd",
    "fixed_monthly_usd",
    "usd_per_hour",
    "nominal_watts",
    "host_watts",
    "pue",
    "usd_per_kwh",
    "tokens_per_second",
)
_KNOWN = {"kind", "description", "amortization_months", "power_included", *_MONEY_FIELDS}


def _profile(where: str, name: str, body: object) -> HardwareProfile:
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(body) - _KNOWN
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    kind = body.get("kind")
    if kind not in ("owned", "leased"):
        raise ConfigError(f"{where}: kind must be `owned` or `leased`, got {kind!r}")
    numbers = {f: to_decimal(body[f], f"{where}: {f}") for f in _MONEY_FIELDS if f in body}
    months = body.get("amortization_months", 36)
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ConfigError(f"{where}: amortization_months must be an integer >= 1")
    included = body.get("power_included", False)
    if not isinstance(included, bool):
        raise ConfigError(f"{where}: power_included must be true or false")
    profile = HardwareProfile(
        name=name,
        kind=kind,
        description=str(body.get("description", "")),
        amortization_months=months,
        power_included=included,
        **numbers,
    )
    _check(where, profile)
    return profile


def _check(where: str, p: HardwareProfile) -> None:
    if p.kind == "owned" and p.residual_usd > p.capex_usd:
        raise ConfigError(f"{where}: residual_usd exceeds capex_usd")
    if p.kind == "leased" and p.usd_per_hour == 0:
        raise ConfigError(f"{where}: a leased profile needs usd_per_hour")
    if p.pue < 1:
        raise ConfigError(f"{where}: pue must be >= 1")
    if p.pays_energy and p.nominal_watts == 0:
        raise ConfigError(f"{where}: nominal_watts is needed to price energy")
