"""Hardware profiles: amortization, lease and energy arithmetic, checked against hand sums."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from spillgate.costing.hardware import (
    SECONDS_PER_MONTH,
    HardwareProfile,
    check_units,
    cost_rate_usd_per_s,
    get_profile,
    load_profiles,
    monthly_cost_usd,
)
from spillgate.errors import ConfigError
from spillgate.settings import CostSettings

MODELS = Path(__file__).resolve().parents[2] / "models"
FINE = Decimal("1e-18")  # well below a cent; Decimal division is exact to 28 digits


def owned(**kw: object) -> HardwareProfile:
    fields: dict[str, object] = {
        "name": "toy-owned",
        "kind": "owned",
        "capex_usd": Decimal(40000),
        "residual_usd": Decimal(4000),
        "amortization_months": 36,  # (40000 - 4000) / 36 = 1000 a month
        "fixed_monthly_usd": Decimal(100),
        "nominal_watts": Decimal(800),
        "host_watts": Decimal(200),  # 1 kW in all
        "pue": Decimal("1.5"),
        "usd_per_kwh": Decimal("0.10"),  # 1 kW * 1.5 * 0.10 = 0.15 $/h
    }
    fields.update(kw)
    return HardwareProfile(**fields)  # type: ignore[arg-type]


def test_average_month_is_30_4375_days() -> None:
    assert SECONDS_PER_MONTH == 2_629_800


def test_owned_monthly_cost_by_hand() -> None:
    # 1000 depreciation + 100 fixed + 0.15 $/h * 730.5 h = 1209.575
    assert monthly_cost_usd(owned(), 1) == Decimal("1209.575")
    assert monthly_cost_usd(owned(), 3) == Decimal("3628.725")


def test_rate_per_second_matches_the_monthly_cost() -> None:
    rate = cost_rate_usd_per_s(owned(), 2, None)
    assert (rate * SECONDS_PER_MONTH).quantize(FINE) == Decimal("2419.15")


def test_measured_power_replaces_nominal_gpu_power_but_host_power_stays() -> None:
    zero = cost_rate_usd_per_s(owned(), 1, 0.0)
    # measured 300 W instead of nominal 800 W: 300 W * 1.5 * 0.10 $/kWh = 0.045 $/h more
    assert ((cost_rate_usd_per_s(owned(), 1, 300.0) - zero) * 3600).quantize(FINE) == Decimal(
        "0.045"
    )
    assert ((cost_rate_usd_per_s(owned(), 1, None) - zero) * 3600).quantize(FINE) == Decimal("0.12")
    # the host's 200 W are charged even with a 0 W GPU reading: 0.03 $/h over the fixed part
    no_host = cost_rate_usd_per_s(owned(host_watts=Decimal(0)), 1, 0.0)
    assert ((zero - no_host) * 3600).quantize(FINE) == Decimal("0.03")


def test_lease_with_power_included_costs_the_hourly_rate() -> None:
    lease = HardwareProfile(
        name="l", kind="leased", usd_per_hour=Decimal("2.49"), power_included=True
    )
    assert (cost_rate_usd_per_s(lease, 1, 650.0) * 3600).quantize(FINE) == Decimal("2.49")
    assert monthly_cost_usd(lease, 2) == Decimal("3637.89")  # 2.49 * 730.5 * 2


def test_lease_without_power_adds_energy() -> None:
    lease = HardwareProfile(
        name="l",
        kind="leased",
        usd_per_hour=Decimal(2),
        nominal_watts=Decimal(500),
        pue=Decimal(1),
        usd_per_kwh=Decimal("0.2"),
    )
    assert (cost_rate_usd_per_s(lease, 1, None) * 3600).quantize(FINE) == Decimal("2.1")


def test_negative_power_reading_is_refused() -> None:
    with pytest.raises(ValueError):
        cost_rate_usd_per_s(owned(), 1, -5.0)


def test_shipped_profiles_load_and_the_default_profile_exists() -> None:
    profiles = load_profiles(MODELS / "hardware.yaml")
    assert {"h100-sxm-owned", "h100-leased", "cpu-node", "l4-owned"} <= set(profiles)
    default = get_profile(profiles, CostSettings().hardware_profile)
    assert monthly_cost_usd(default, 1) > 0
    h100 = profiles["h100-sxm-owned"]
    assert h100.capex_usd == Decimal(37500) and h100.pue == Decimal("1.3")
    # (37500-5000)/36 + 150 + (700+150) W * 1.3 * 0.12 $/kWh * 730.5 h / 1000
    expected = (
        Decimal(32500) / 36
        + 150
        + Decimal("850") * Decimal("1.3") * Decimal("0.12") * (Decimal("730.5") / 1000)
    )
    assert monthly_cost_usd(h100, 1) == expected


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="cpu-node"):
        get_profile(load_profiles(MODELS / "hardware.yaml"), "tpu-v9")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("kind: owned\n    capex_usd: 1\n    residual_usd: 2\n    nominal_watts: 1", "residual"),
        ("kind: leased\n    power_included: true", "usd_per_hour"),
        ("kind: owned\n    capex_usd: 1\n    nominal_watts: 1\n    pue: 0.9", "pue"),
        ("kind: owned\n    capex_usd: 1\n    nominal_watts: 1\n    colour: red", "unknown"),
        ("kind: rented", "kind"),
        (
            "kind: owned\n    capex_usd: 1\n    nominal_watts: 1\n    amortization_months: 0",
            "months",
        ),
    ],
)
def test_bad_profiles_name_the_profile(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "hardware.yaml"
    path.write_text(f"profiles:\n  broken-box:\n    {body}\n")
    with pytest.raises(ConfigError, match=f"broken-box.*{message}"):
        load_profiles(path)


def test_zero_units_of_a_profile_that_costs_money_is_refused() -> None:
    cpu = load_profiles(MODELS / "hardware.yaml")["cpu-node"]
    with pytest.raises(ConfigError, match=r"cost\.units"):
        check_units(cpu, 0)
    check_units(cpu, 1)
    check_units(HardwareProfile(name="donated", kind="owned"), 0)  # costs nothing: fine


def test_units_is_the_setting_and_gpus_a_deprecated_alias() -> None:
    assert CostSettings(units=3).units == 3
    with pytest.warns(DeprecationWarning, match=r"cost\.units"):
        assert CostSettings.model_validate({"gpus": 2}).units == 2
    with pytest.raises(ValueError, match="only units"):
        CostSettings.model_validate({"gpus": 2, "units": 2})
