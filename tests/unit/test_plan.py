"""`spillgate plan`: strategy costs and break-even, against sums worked by hand."""

from __future__ import annotations

import argparse
import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.cli.report import add_report_commands
from spillgate.costing.hardware import HardwareProfile, load_profiles
from spillgate.costing.pricing import Price, PriceBook
from spillgate.errors import ConfigError
from spillgate.reports.plan import load_at_percentile, marginal_unit, project, spill_tps

MODELS = Path(__file__).resolve().parents[2] / "models"

# $1/h lease, power included: exactly $730.50 a month per unit.
LEASE = HardwareProfile(name="toy", kind="leased", usd_per_hour=Decimal(1), power_included=True)
DAY = 8_640_000  # one unit at 100 tokens/s, for a whole day


def flat_price(usd: str) -> Price:
    d = Decimal(usd)
    return Price("p/flat", date(2025, 1, 1), d, d, d)


def test_three_strategies_worked_by_hand() -> None:
    # 8.64M tokens/day = 100 tokens/s average, peak 3x = 300 tokens/s.
    plan = project(DAY, 3, LEASE, 100, flat_price("1"))
    # all-API: 8.64M * 30.4375 days * $1/1M
    assert plan.all_api.total_monthly_usd == Decimal("262.98")
    assert plan.all_api.units == 0
    # all-local: ceil(300/100) = 3 units * 730.5
    assert (plan.all_local.units, plan.all_local.total_monthly_usd) == (3, Decimal("2191.5"))
    assert plan.all_local.api_tokens_per_day == 0
    # hybrid sized for the mean: 1 unit. F = 3 > 2: the curve falls from 25.92M/day to 0 over
    # 2/3 of the day, crossing 8.64M at x = 2/3 * (17.28/25.92) = 4/9;
    # spill = 17.28M * 4/9 / 2 = 3.84M tokens/day -> 3.84 * 30.4375 = $116.88
    assert plan.hybrid.units == 1
    assert plan.hybrid.api_tokens_per_day == Decimal("3840000")
    assert plan.hybrid.api_monthly_usd == Decimal("116.88")
    assert plan.hybrid.total_monthly_usd == Decimal("847.38")
    assert plan.cheapest().name == "all-api"
    # break-even 730.5 / (30.4375 / 1e6) = 24M tokens/day > 2.88M that one unit serves at 3x peak
    assert plan.break_even_tokens_per_day is None


def test_break_even_when_the_api_is_dear() -> None:
    plan = project(DAY, 3, LEASE, 100, flat_price("100"))
    assert plan.break_even_tokens_per_day == Decimal("240000")  # 730.5 / (100e-6 * 30.4375)
    # hybrid spills 3.84M tokens/day at $100/1M = $11,688 a month: all-local (2191.5) wins
    assert plan.cheapest().name == "all-local"
    below = project(239_000, 3, LEASE, 100, flat_price("100"))
    above = project(241_000, 3, LEASE, 100, flat_price("100"))
    assert below.all_api.total_monthly_usd < below.all_local.total_monthly_usd
    assert above.all_api.total_monthly_usd > above.all_local.total_monthly_usd


def test_gentle_peak_spill_by_hand() -> None:
    # F = 1.5: curve from 12.96M down to 4.32M over the whole day; capacity 8.64M crosses at
    # x = 4.32/8.64 = 0.5, spill = 4.32M * 0.5 / 2 = 1.08M tokens/day.
    plan = project(DAY, Decimal("1.5"), LEASE, 100, flat_price("1"))
    assert plan.hybrid.api_tokens_per_day == Decimal("1080000")
    assert plan.all_local.units == 2


def test_percentile_sizing() -> None:
    # p90 of the F=3 curve: x = 0.1 -> 25.92M * (1 - 0.1 / (2/3)) = 22.032M -> 3 units
    assert load_at_percentile(Decimal(DAY), Decimal(3), Decimal("0.9")) == Decimal("22032000")
    plan = project(DAY, 3, LEASE, 100, flat_price("1"), hybrid_percentile=Decimal("0.9"))
    assert plan.hybrid.units == 3 and plan.hybrid_sizing == "p90"


def test_blended_price_mix() -> None:
    price = Price("p/m", date(2025, 1, 1), Decimal(2), Decimal(1), Decimal(8))
    plan = project(1_000_000, 1, LEASE, 100, price, cached_share=Decimal("0.5"))
    # 0.75 * (0.5*2 + 0.5*1) + 0.25 * 8 = 1.125 + 2 = 3.125 $/1M
    assert plan.api_usd_per_million == Decimal("3.125")


def test_json_form_has_strings_for_money() -> None:
    data = project(DAY, 3, LEASE, 100, flat_price("1")).to_dict()
    assert data["strategies"]["hybrid"]["total_monthly_usd"] == "847.38"
    assert data["strategies"]["all-local"]["units"] == 3
    assert data["break_even_tokens_per_day"] is None


@pytest.mark.parametrize(
    "kwargs",
    [{"tokens_per_day": -1}, {"peak_factor": Decimal("0.5")}, {"gpus_throughput_tps": 0}],
)
def test_bad_inputs_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "tokens_per_day": DAY,
        "peak_factor": 2,
        "profile": LEASE,
        "gpus_throughput_tps": 100,
        "api_price": flat_price("1"),
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        project(**args)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    factor=st.decimals("1", "8", places=2),
    capacity_share=st.decimals("0", "10", places=2),
)
def test_spill_matches_numeric_integration_of_the_load_curve(
    factor: Decimal, capacity_share: Decimal
) -> None:
    avg = 1000.0
    f = float(factor)
    cap = float(capacity_share) * avg
    low, length = (avg * (2 - f), 1.0) if f <= 2 else (0.0, 2 / f)
    n = 20_000
    xs = ((i + 0.5) / n for i in range(n))
    curve = (avg * f - (avg * f - low) * x / length if x < length else low for x in xs)
    numeric = sum(max(load - cap, 0.0) for load in curve) / n
    exact = float(spill_tps(Decimal(avg), factor, capacity_share * Decimal(avg)))
    assert exact == pytest.approx(numeric, abs=avg * 1e-3)


# --- `spillgate plan` ----------------------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spillgate")
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_plan_command_json_matches_project(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    argv = ["plan", "--tokens-per-day", "50000000", "--peak-factor", "2.5", "--hardware",
            "h100-leased", "--format", "json", "--output", str(out)]  # fmt: skip
    assert run_cli(argv) == 0
    data = json.loads(out.read_text())
    profile = load_profiles(MODELS / "hardware.yaml")["h100-leased"]
    price = PriceBook.load(MODELS / "pricing.yaml").price_for("openai/gpt-4o-mini")
    expected = project(50_000_000, Decimal("2.5"), profile, profile.tokens_per_second, price)
    assert data == json.loads(json.dumps(expected.to_dict()))
    # $2.49/h * 730.5 h = $1818.945 per unit; ceil(50M*2.5/86400/2500) = 1 unit
    assert data["unit_monthly_usd"] == "1818.945"
    assert data["strategies"]["all-local"]["units"] == 1


def test_plan_html_is_offline_with_a_chart_and_break_even(tmp_path: Path) -> None:
    out = tmp_path / "plan.html"
    argv = ["plan", "--tokens-per-day", "20000000", "--peak-factor", "2", "--hardware",
            "h100-sxm-owned", "--api-model", "openai/gpt-4o", "--format", "html",
            "--output", str(out)]  # fmt: skip
    assert run_cli(argv) == 0
    html = out.read_text()
    assert not re.search(r"(?i)https?://|<script|<link|\bsrc=", html)
    assert html.count("<svg") == 1 and "break-even" in html and "all-local" in html


def test_plan_md_and_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["plan", "--tokens-per-day", "1000000", "--hardware", "cpu-node"]) == 0
    assert "| hybrid |" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="tpu"):
        run_cli(["plan", "--tokens-per-day", "1", "--hardware", "tpu"])


def test_one_more_unit_takes_spill_up_to_its_capacity() -> None:
    # Spill of 10M tokens/month costing $30: a unit of $20/month with room for 4M tokens
    # takes 40% of it, saving $12 < $20; with room for all of it, $30 > $20.
    small = marginal_unit(Decimal(10_000_000), Decimal(30), Decimal(20), Decimal(4_000_000))
    assert (small.saved_monthly_usd, small.net_monthly_usd, small.pays) == (12, -8, False)
    big = marginal_unit(Decimal(10_000_000), Decimal(30), Decimal(20), Decimal(50_000_000))
    assert (big.saved_monthly_usd, big.pays) == (30, True)
    unknown = marginal_unit(Decimal(10_000_000), Decimal(30), Decimal(20), None)
    assert unknown.saved_monthly_usd == 30
    nothing = marginal_unit(Decimal(0), Decimal(0), Decimal(20), Decimal(1))
    assert (nothing.saved_monthly_usd, nothing.pays) == (0, False)
