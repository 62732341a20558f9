"""Price book: exact Decimal prices, dated entries, and the cost of a call to the last digit."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from spillgate.catalog import Catalog
from spillgate.costing.pricing import PriceBook, blended_usd_per_million, cost
from spillgate.errors import ConfigError

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load(MODELS / "pricing.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_text(text)
    return path


def test_every_paid_model_of_the_catalog_has_a_price_now(book: PriceBook) -> None:
    catalog = Catalog.load(MODELS / "catalog.yaml")
    book.require_prices(catalog.paid)  # raises if one is missing
    for name in catalog.local.values():
        if name.reference_api_model:
            book.price_for(name.reference_api_model)


def test_prices_are_exact_decimals(book: PriceBook) -> None:
    price = book.price_for("openai/gpt-4o-mini")
    assert isinstance(price.input, Decimal)
    assert (price.input, price.cached_input, price.output) == (
        Decimal("0.15"),
        Decimal("0.075"),
        Decimal("0.60"),
    )


def test_cost_bills_cached_prompt_tokens_at_the_cached_rate(book: PriceBook) -> None:
    price = book.price_for("openai/gpt-4o-mini")
    # 1000 fresh * 0.15 + 200 cached * 0.075 + 350 out * 0.60 = 150 + 15 + 210 = 375 per 1M
    assert cost(price, 1200, 200, 350) == Decimal("0.000375")


def test_cost_of_an_all_cached_anthropic_prompt(book: PriceBook) -> None:
    price = book.price_for("anthropic/claude-3-5-haiku-latest")
    assert cost(price, 1_000_000, 1_000_000, 0) == Decimal("0.08")
    assert cost(price, 2_000, 0, 1_000) == Decimal("0.0056")  # 2000*0.8 + 1000*4 = 5600


def test_cost_rejects_impossible_usage(book: PriceBook) -> None:
    price = book.price_for("openai/gpt-4o")
    with pytest.raises(ValueError, match="cached_tokens"):
        cost(price, 10, 11, 0)
    with pytest.raises(ValueError):
        cost(price, -1, 0, 0)


def test_price_in_force_follows_effective_dates(book: PriceBook) -> None:
    assert book.price_for("openai/gpt-4o", date(2024, 6, 1)).input == Decimal("5.00")
    assert book.price_for("openai/gpt-4o", date(2024, 10, 2)).input == Decimal("2.50")
    # 23:30 on Oct 1 in UTC-5 is already Oct 2 in UTC: the new price applies.
    late = datetime(2024, 10, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert book.price_for("openai/gpt-4o", late).output == Decimal("10.00")
    assert book.price_for("openai/gpt-4o", datetime(2024, 10, 1, 12, tzinfo=UTC)).output == 15


def test_no_price_before_the_first_entry(book: PriceBook) -> None:
    with pytest.raises(ConfigError, match="effective on 2020-01-01"):
        book.price_for("openai/gpt-4o-mini", date(2020, 1, 1))


def test_require_prices_names_the_missing_model(book: PriceBook) -> None:
    with pytest.raises(ConfigError, match="openai/gpt-9-turbo"):
        book.require_prices(["openai/gpt-4o", "openai/gpt-9-turbo"])


def test_yaml_floats_are_read_without_binary_rounding(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models:\n  p/m:\n    - {effective_from: 2025-01-01, input: 0.1, cached_input: '0.2',"
        " output: 3}\n",
    )
    price = PriceBook.load(path).price_for("p/m", date(2025, 1, 1))
    assert price.input + price.cached_input == Decimal("0.3")  # 0.1 + 0.2 != 0.3 in floats
    assert price.output == Decimal(3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    - {effective_from: 2025-01-01, input: 1, cached_input: 1}\n", "missing"),
        ("    - {effective_from: 2025-01-01, input: -1, cached_input: 1, output: 1}\n", ">= 0"),
        ("    - {effective_from: 2025-01-01, input: .inf, cached_input: 1, output: 1}\n", "number"),
        ("    - {effective_from: soon, input: 1, cached_input: 1, output: 1}\n", "not a date"),
        (
            "    - {effective_from: 2025-01-01, input: 1, cached_input: 1, output: 1}\n"
            "    - {effective_from: 2025-01-01, input: 2, cached_input: 2, output: 2}\n",
            "share an effective_from",
        ),
    ],
)
def test_malformed_price_entries_are_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PriceBook.load(write(tmp_path, "models:\n  p/m:\n" + body))


def test_blended_price_uses_the_observed_mix_or_three_to_one(book: PriceBook) -> None:
    price = book.price_for("openai/gpt-4o-mini")
    assert blended_usd_per_million(price, 0, 0, 0) == Decimal("0.2625")  # .75*.15 + .25*.6
    # 800 in (no cache), 200 out: (800*.15 + 200*.6) / 1000 tokens * 1e6 / 1e6 = 0.24
    assert blended_usd_per_million(price, 800, 0, 200) == Decimal("0.24")
