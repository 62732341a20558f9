"""Capacity-planner report: every figure recomputed from the raw rows, and the rendered forms."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate.costing.hardware import load_profiles, monthly_cost_usd
from spillgate.costing.pricing import PriceBook
from spillgate.reports.figures import MAX_BUCKETS, WindowTooLarge, build_report
from spillgate.reports.gather import parse_when
from spillgate.reports.render import render_report, usd

MODELS = Path(__file__).resolve().parents[2] / "models"
BOOK = PriceBook.load(MODELS / "pricing.yaml")
PROFILE = load_profiles(MODELS / "hardware.yaml")["cpu-node"]
REF = "openai/gpt-4o-mini"
T0 = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = T0 + timedelta(hours=3)


def row(
    minute: int, tier: str, p: int, c: int, o: int, cost: str, cf: str, **kw: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": f"r{minute}",
        "started_at": T0 + timedelta(minutes=minute),
        "finished_at": T0 + timedelta(minutes=minute, seconds=3),
        "key_id": None,
        "tags": "{}",
        "route": "chat",
        "reason": "local_first",
        "tier": tier,
        "cost_kind": tier,
        "sensitivity": "",
        "prompt_tokens": p,
        "cached_tokens": c,
        "completion_tokens": o,
        "cost_usd": Decimal(cost),
        "counterfactual_usd": Decimal(cf),
        "state": "settled",
    }
    base.update(kw)
    return base


ROWS = [
    row(10, "local", 1000, 0, 500, "0.0010", "0.00045", key_id="k1", tags='{"team": "search"}'),
    row(40, "api", 2000, 1000, 1000, "0.000825", "0.000825", key_id="k1",
        tags='{"team": "search"}', reason="overflow:ttft"),
    row(65, "local", 3000, 0, 1000, "0.0030", "0.00105", key_id="k2",
        tags='{"team": "legal", "env": "prod"}', reason="sensitive", sensitivity='["EMAIL"]'),
    row(90, "api", 500, 0, 500, "0.000375", "0.000375", key_id="k2", reason="local_unavailable"),
    row(135, "api", 100, 0, 100, "0.000075", "0.000075", reason="pinned_api"),
    row(170, "local", 100, 0, 0, "0", "0", state="reserved"),  # not settled: left out
    row(190, "local", 100, 0, 100, "0.5", "0.1"),  # after the window
]  # fmt: skip
# The ledger records measured-power seconds with every period (nominal power here: 0 s).
PERIODS = [
    {"started_at": T0, "busy_s": 600.0, "idle_s": 3000.0, "busy_usd": Decimal("0.001"),
     "idle_usd": Decimal("0.005"), "measured_s": 0.0},
    {"started_at": T0 + timedelta(hours=1), "busy_s": 1200.0, "idle_s": 2400.0,
     "busy_usd": Decimal("0.003"), "idle_usd": Decimal("0.004"), "measured_s": 0.0},
    {"started_at": T0 + timedelta(hours=2), "busy_s": 0.0, "idle_s": 3600.0,
     "busy_usd": Decimal(0), "idle_usd": Decimal("0.006"), "measured_s": 0.0},
]  # fmt: skip


def report(rows: list[dict[str, Any]] = ROWS, periods: list[dict[str, Any]] = PERIODS,
           bucket: str = "hour") -> dict[str, Any]:  # fmt: skip
    return build_report(
        rows, periods, since=T0, until=UNTIL, bucket=bucket,  # type: ignore[arg-type]
        price_book=BOOK, reference_model=REF, hardware_profile=PROFILE,
    )  # fmt: skip


def D(text: str | None) -> Decimal:
    assert text is not None
    return Decimal(text)


def test_totals_worked_by_hand() -> None:
    t = report()["totals"]
    assert (t["requests"], t["local_requests"], t["api_requests"]) == (5, 2, 3)
    assert (t["local_tokens"], t["api_tokens"]) == (5500, 4200)
    assert D(t["local_busy_usd"]) == Decimal("0.004")
    assert D(t["idle_usd"]) == Decimal("0.015")
    assert D(t["api_usd"]) == Decimal("0.001275")
    assert D(t["all_api_usd"]) == Decimal("0.002775")  # 0.0015 local counterfactual + API
    assert D(t["actual_usd"]) == Decimal("0.020275")
    assert D(t["savings_usd"]) == Decimal("-0.0175")  # an idle toy node loses money
    # gpt-4o-mini on the local mix (4000 in, 1500 out): (600 + 900) / 5500 tokens
    assert D(t["reference_usd_per_million"]) == Decimal(1500) / 5500
    assert D(t["local_usd_per_million"]) == Decimal("0.004") * 1_000_000 / 5500
    assert D(t["local_usd_per_million_with_idle"]) == Decimal("0.019") * 1_000_000 / 5500
    assert t["utilization"] == pytest.approx(1 / 6)
    # 0.019 $ / 10800 s over (5500 tokens / 1800 busy s) * (1500/5500 $/1M) = 19/9
    assert t["break_even_utilization"] == pytest.approx(19 / 9)


def test_spill_is_overflow_and_unavailable_of_non_sensitive_traffic() -> None:
    t = report()["totals"]
    assert (t["spill_requests"], t["spill_tokens"]) == (2, 4000)
    assert t["spill_share_requests"] == 0.5  # of 4 non-sensitive requests
    assert t["spill_share_tokens"] == pytest.approx(4000 / 5700)
    assert D(t["spill_usd"]) == Decimal("0.0012")
    assert D(t["spill_monthly_usd"]) == Decimal("0.0012") * 2_629_800 / 10_800
    assert D(t["one_more_unit_monthly_usd"]) == monthly_cost_usd(PROFILE, 1)
    assert t["one_more_unit_pays"] is False


def test_breakdowns_per_key_and_per_tag() -> None:
    r = report()
    assert set(r["by_key"]) == {"k1", "k2", "(none)"}
    assert D(r["by_key"]["k1"]["cost_usd"]) == Decimal("0.001825")
    assert set(r["by_tag"]) == {"team=search", "team=legal", "env=prod"}
    assert r["by_tag"]["team=legal"]["local_tokens"] == 4000
    assert D(r["by_tag"]["team=search"]["all_api_usd"]) == Decimal("0.001275")


def test_series_has_every_bucket_even_empty_ones() -> None:
    series = report()["series"]
    assert [b["start"] for b in series] == [(T0 + timedelta(hours=h)).isoformat() for h in range(3)]
    assert [b["requests"] for b in series] == [2, 2, 1]
    assert series[2]["utilization"] == 0.0
    assert series[2]["local_usd_per_million"] is None  # no local tokens that hour
    day = report(bucket="day")["series"]
    assert len(day) == 1 and day[0]["requests"] == 5


def test_json_round_trips_and_money_is_text() -> None:
    r = report()
    assert json.loads(json.dumps(r)) == r
    assert isinstance(r["totals"]["api_usd"], str)


# --- independent recomputation over generated ledgers --------------------------------------
tiers = st.sampled_from(["local", "api"])
reasons = st.sampled_from(["local_first", "overflow:queue", "local_unavailable", "pinned_api"])
ledger_rows = st.lists(
    st.tuples(
        st.integers(0, 179), tiers, reasons, st.booleans(), st.integers(0, 4000),
        st.integers(0, 2000), st.decimals("0", "0.01", places=8), st.sampled_from(["a", "b"]),
    ),
    max_size=40,
)  # fmt: skip


def recompute(rows: list[dict[str, Any]]) -> dict[str, Decimal | int]:
    """The report's definitions, written again as plain loops over the raw columns."""
    out: dict[str, Any] = {"local_usd": Decimal(0), "api_usd": Decimal(0), "cf": Decimal(0),
                           "local_tokens": 0, "api_tokens": 0, "spill_usd": Decimal(0)}  # fmt: skip
    for r in rows:
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        if r["tier"] == "local":
            out["local_usd"] += r["cost_usd"]
            out["cf"] += r["counterfactual_usd"]
            out["local_tokens"] += tokens
        else:
            out["api_usd"] += r["cost_usd"]
            out["api_tokens"] += tokens
            if not r["sensitivity"] and r["reason"].split(":")[0] in (
                "overflow",
                "local_unavailable",
            ):
                out["spill_usd"] += r["cost_usd"]
    return out


@settings(max_examples=60, deadline=None)
@given(spec=ledger_rows)
def test_every_total_recomputes_from_raw_rows(spec: list[tuple[Any, ...]]) -> None:
    rows = [
        row(minute, tier, p, p // 3, o, str(cost), str(cost * 2), reason=reason,
            sensitivity='["PHONE"]' if sens else "", key_id=key)
        for minute, tier, reason, sens, p, o, cost, key in spec
    ]  # fmt: skip
    r = report(rows)
    t, mine = r["totals"], recompute(rows)
    idle = sum((p["idle_usd"] for p in PERIODS), Decimal(0))
    assert D(t["local_busy_usd"]) == mine["local_usd"]
    assert D(t["api_usd"]) == mine["api_usd"]
    assert D(t["spill_usd"]) == mine["spill_usd"]
    assert (t["local_tokens"], t["api_tokens"]) == (mine["local_tokens"], mine["api_tokens"])
    assert D(t["all_api_usd"]) == mine["cf"] + mine["api_usd"]
    assert D(t["actual_usd"]) == mine["api_usd"] + mine["local_usd"] + idle
    assert D(t["savings_usd"]) == D(t["all_api_usd"]) - D(t["actual_usd"])
    # buckets and breakdowns partition the totals exactly
    for part in (r["series"], list(r["by_key"].values())):
        assert sum(b["requests"] for b in part) == t["requests"]
        assert sum((D(b["api_usd"]) for b in part), Decimal(0)) == mine["api_usd"]
        assert sum((D(b["local_usd" if "local_usd" in b else "local_busy_usd"]) for b in part),
                   Decimal(0)) == mine["local_usd"]  # fmt: skip


# --- rendering -----------------------------------------------------------------------------
def test_html_is_one_offline_file_with_charts_and_the_key_figures() -> None:
    r = report()
    html = render_report(r, "html")
    assert not re.search(r"(?i)https?://|<script|<link|\bsrc=|@import|url\(", html)
    assert html.count("<svg") == 3
    t = r["totals"]
    for figure in ("actual_usd", "all_api_usd", "api_usd", "local_usd_per_million_with_idle"):
        assert usd(t[figure]) in html
    assert "break-even" in html and "team=legal" in html and "k2" in html


def test_html_escapes_key_and_tag_names() -> None:
    rows = [row(5, "api", 10, 0, 10, "0.01", "0.01", key_id="<b>x</b>", tags='{"a": "<i>"}')]
    html = render_report(report(rows), "html")
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_csv_has_one_row_per_bucket_and_an_exact_total() -> None:
    r = report()
    parsed = list(csv.DictReader(io.StringIO(render_report(r, "csv"))))
    assert [p["bucket_start"] for p in parsed] == [b["start"] for b in r["series"]] + ["total"]
    assert parsed[-1]["api_usd"] == r["totals"]["api_usd"]
    assert parsed[0]["local_tokens"] == "1500"
    assert parsed[2]["local_usd_per_million"] == ""  # undefined, not zero


def test_markdown_tables() -> None:
    md = render_report(report(), "md")
    assert md.startswith("# Spillgate cost report 2025-03-01T00:00")
    assert "| Savings |" in md and "## Per key" in md and "| k1 |" in md
    with pytest.raises(ValueError):
        render_report(report(), "pdf")


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        build_report([], [], since=UNTIL, until=T0, price_book=BOOK, reference_model=REF,
                     hardware_profile=PROFILE)  # fmt: skip


# --- `spillgate report --since` ----------------------------------------------------------
def test_since_accepts_durations_and_iso_times() -> None:
    now = datetime(2025, 3, 8, 12, tzinfo=UTC)
    assert parse_when("7d", now) == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert parse_when("90m", now) == datetime(2025, 3, 8, 10, 30, tzinfo=UTC)
    assert parse_when("2025-03-01", now) == datetime(2025, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_when("last tuesday", now)


# --- what a planner reads first, and how it reads ------------------------------------------
def test_window_is_capped_at_ten_thousand_buckets() -> None:
    until = datetime(2026, 12, 2, tzinfo=UTC)
    with pytest.raises(WindowTooLarge):
        build_report([], [], since=datetime(1, 1, 1, tzinfo=UTC), until=until, bucket="day",
                     price_book=BOOK, reference_model=REF, hardware_profile=PROFILE)  # fmt: skip
    edge = until - timedelta(hours=MAX_BUCKETS)
    assert len(build_report([], [], since=edge, until=until, price_book=BOOK,
                            reference_model=REF, hardware_profile=PROFILE)["series"]) == 10_000
    with pytest.raises(WindowTooLarge):
        build_report([], [], since=edge - timedelta(minutes=1), until=until, price_book=BOOK,
                     reference_model=REF, hardware_profile=PROFILE)  # fmt: skip


@pytest.mark.parametrize(("value", "text"), [
    ("0.0000070044", "$0.000007004"), ("7.0044e-06", "$0.000007004"), ("0", "$0"),
    ("1234.567", "$1,234.57"), ("0.4523", "$0.4523"), ("-0.0175", "-$0.0175"),
    ("0.00000000012345", "$0.0000000001234"), (None, "n/a"),
])  # fmt: skip
def test_money_reads_as_plain_decimals(value: str | None, text: str) -> None:
    assert usd(value) == text


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=14,
                   allow_nan=False, allow_infinity=False))  # fmt: skip
def test_money_is_never_in_exponent_form_and_close(value: Decimal) -> None:
    text = usd(str(value))
    assert "e" not in text.lower()
    shown = Decimal(text.replace("$", "").replace(",", ""))
    assert abs(shown - value) <= max(Decimal("0.005"), abs(value) * Decimal("0.001"))


def test_rendered_reports_have_no_exponent_money() -> None:
    rows = [row(5, "local", 3, 0, 2, "0.0000070044", "0.0000001")]
    for fmt in ("md", "html"):
        assert not re.search(r"\$-?[\d.,]+e", render_report(report(rows), fmt), re.I)


def test_verdict_opens_md_and_html() -> None:
    r = report()
    # by hand: all-API 0.002775, actual 0.020275: 0.0175 more, 630.6% of the all-API cost;
    # utilization 1/6 = 16.7% against a break-even of 19/9 (unreachable); spill is
    # $0.2922/month against a unit's monthly cost.
    md_lines = render_report(r, "md").splitlines()
    assert md_lines[0].startswith("# Spillgate cost report")
    verdict = next(line for line in md_lines[1:] if line)
    assert verdict.startswith("**Verdict:** Cost $0.0175 (630.6%) more than sending everything")
    assert "utilization 16.7%; the hardware cannot break even (needs 211.1%)" in verdict
    assert "one more cpu-node unit" in verdict and "would not pay for itself" in verdict
    html = render_report(r, "html")
    body = html[html.index("</h1>") + 5:]
    assert body.startswith('<p class="verdict"><strong>Verdict:</strong> Cost $0.0175 (630.6%)')
    assert r["verdict"]["one_more_unit_pays"] is False and r["verdict"]["local_pays"] is False


def test_verdict_when_local_saves_and_spill_would_pay_for_a_unit() -> None:
    # One local row of 2M tokens worth $5 at the API, costing $0.001; $100 of spill in an
    # hour is $73,050/month, far above one cpu-node unit a month. Break-even by hand:
    # ($0.002 / 3600 s) * 1e6 / (2M tokens / 1800 busy s * $0.375/1M) = 0.13%.
    rows = [row(5, "local", 1_000_000, 0, 1_000_000, "0.001", "5"),
            row(6, "api", 1000, 0, 1000, "100", "100", reason="overflow:queue")]  # fmt: skip
    periods = [{"started_at": T0, "busy_s": 1800.0, "idle_s": 1800.0,
                "busy_usd": Decimal("0.001"), "idle_usd": Decimal("0.001")}]  # fmt: skip
    r = build_report(rows, periods, since=T0, until=T0 + timedelta(hours=1), price_book=BOOK,
                     reference_model=REF, hardware_profile=PROFILE)  # fmt: skip
    verdict = render_report(r, "md").split("\n\n")[1]
    saved = Decimal("105") - Decimal("100.002")
    assert verdict.startswith(f"**Verdict:** Saved ${saved:.2f} ({float(saved / 105):.1%})")
    assert "utilization 50.0% vs break-even 0.13%: local pays" in verdict
    assert "would pay for itself" in verdict and r["totals"]["one_more_unit_pays"] is True


def test_usage_and_reservation_bases_side_by_side() -> None:
    t = report()["totals"]
    # periods: busy 0.004, idle 0.015 over 5500 local tokens
    assert D(t["usage_basis_usd_per_million"]) == Decimal("0.004") * 1_000_000 / 5500
    assert D(t["reservation_basis_usd_per_million"]) == Decimal("0.019") * 1_000_000 / 5500
    md = render_report(report(), "md")
    assert "usage basis (busy) / reservation basis (all uptime)" in md


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html)


def test_a_single_bucket_is_a_bar_on_an_axis_spanning_that_bucket() -> None:
    r = report(bucket="day")  # the 3-hour window is one day bucket
    assert len(r["series"]) == 1
    charts = svgs(render_report(r, "html"))
    assert len(charts) == 3
    for chart in charts:
        assert "<rect" in chart and "<polyline" not in chart
        times = re.findall(r'text-anchor="middle">([^<]+)</text>', chart)
        assert (times[0], times[-1]) == ("03-01 00:00", "03-02 00:00")  # that day, no more


def test_many_buckets_are_lines_and_costs_bars() -> None:
    charts = svgs(render_report(report(), "html"))  # 3 hour buckets
    assert "<rect" in charts[0] and "<polyline" in charts[1] and "<polyline" in charts[2]


def test_low_utilization_ticks_are_readable() -> None:
    periods = [{"started_at": T0 + timedelta(hours=h), "busy_s": 3.6 * (h + 1),
                "idle_s": 3600 - 3.6 * (h + 1), "busy_usd": Decimal(0),
                "idle_usd": Decimal(0)} for h in range(3)]  # 0.1%, 0.2%, 0.3%  # fmt: skip
    utilization = svgs(render_report(report(periods=periods), "html"))[2]
    ticks = re.findall(r'text-anchor="end">([^<]*%)</text>', utilization)
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)
    assert ticks[0] == "0.00%" or ticks[0] == "0.0%"
    assert any(t not in ("0%", "0.0%", "0.00%") for t in ticks)


def test_an_unreachable_break_even_does_not_stretch_the_utilization_axis() -> None:
    r = report()  # break-even 211%, utilization at most 33% an hour
    utilization = svgs(render_report(r, "html"))[2]
    ticks = [float(t) for t in re.findall(r'text-anchor="end">([^<]*)%</text>', utilization)]
    assert max(ticks) <= 50
    assert "break-even 211.1%, unreachable" in render_report(r, "html")


def test_busy_cost_no_request_carries_is_shown_in_every_format() -> None:
    # Other clients of the engine (or a request that spilled mid-way) used 0.0007 of the
    # second hour's 0.003 busy: the node's requests carry the rest.
    periods = [dict(p) for p in PERIODS]
    periods[1]["unattributed_usd"] = Decimal("0.0007")
    r = report(periods=periods)
    assert D(r["totals"]["unattributed_usd"]) == Decimal("0.0007")
    assert [D(b["unattributed_usd"]) for b in r["series"]] == [0, Decimal("0.0007"), 0]
    assert json.loads(render_report(r, "json"))["totals"]["unattributed_usd"] == "0.0007"
    for fmt in ("md", "html"):
        text = render_report(r, fmt)
        assert "(unattributed)" in text and usd("0.0007") in text, fmt
    parsed = list(csv.DictReader(io.StringIO(render_report(r, "csv"))))
    assert parsed[-1]["unattributed_usd"] == "0.0007"
