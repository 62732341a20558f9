"""Paid-API prices (models/pricing.yaml) and the cost of one call, exactly, in Decimal.

Prices are USD per 1M tokens and dated: `price_for(model, at)` returns the entry in force at
`at` (the latest whose `effective_from` is on or before it), so old ledger rows stay
explainable after a price change. Numbers in the YAML are read as Decimal from their source
text, never through a binary float, so `0.15` is exactly 0.15.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from spillgate.errors import ConfigError

MILLION = Decimal(1_000_000)
# Input:output token mix used to blend a price when no traffic has been observed (3:1 is the
# usual convention of public price comparisons).
DEFAULT_INPUT_SHARE = Decimal("0.75")


class _ExactLoader(yaml.SafeLoader):
    """A safe YAML loader that turns floats into Decimal built from the scalar's own text."""


def _decimal_scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node))
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation as exc:
        raise yaml.constructor.ConstructorError(None, None, f"bad number {text!r}") from exc
    if not value.is_finite():
        raise yaml.constructor.ConstructorError(None, None, f"number must be finite: {text!r}")
    return value


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _decimal_scalar)


def load_yaml_exact(path: Path) -> Any:
    """Parse a YAML file with floats as exact Decimal; ConfigError if unreadable."""
    try:
        return yaml.load(path.read_text(), Loader=_ExactLoader)  # noqa: S506 (safe subclass)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def to_decimal(value: object, what: str) -> Decimal:
    """An exact, finite, non-negative Decimal from a YAML int/Decimal/quoted string."""
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ConfigError(f"{what}: expected a number, got {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{what}: not a number: {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ConfigError(f"{what}: must be a finite number >= 0, got {value!r}")
    return result


def decimal_text(value: Decimal) -> str:
    """Plain, exact text of a Decimal without trailing zeros or exponent ("847.38", "0")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True, slots=True)
class Price:
    """One dated price entry: USD per 1M tokens."""

    model: str
    effective_from: date
    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_write: Decimal | None = None  # prompt-cache writes (Anthropic); None: the input rate

    @property
    def cache_write_rate(self) -> Decimal:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def dearest_input(self) -> Decimal:
        """The most one prompt token can cost (a budget's upper bound)."""
        return max(self.input, self.cache_write_rate)


def cost(price: Price, prompt_tokens: int, cached_tokens: int, completion_tokens: int,
         cache_write_tokens: int = 0) -> Decimal:
    """Exact USD cost of one call.

    `cached_tokens` (cache reads) and `cache_write_tokens` (prompt-cache writes) are disjoint
    subsets of `prompt_tokens` (OpenAI usage semantics) billed at their own rates; the rest of
    the prompt at the input rate:

        ((prompt - cached - written) * input + cached * cached_input
         + written * cache_write + completion * output) / 1e6
    """
    if min(prompt_tokens, cached_tokens, completion_tokens, cache_write_tokens) < 0:
        raise ValueError("token counts must be >= 0")
    if cached_tokens + cache_write_tokens > prompt_tokens:
        raise ValueError(f"cached_tokens ({cached_tokens}) + cache_write_tokens "
                         f"({cache_write_tokens}) > prompt_tokens ({prompt_tokens})")
    fresh = prompt_tokens - cached_tokens - cache_write_tokens
    total = (fresh * price.input + cached_tokens * price.cached_input
             + cache_write_tokens * price.cache_write_rate)
    return (total + completion_tokens * price.output) / MILLION


def blended_usd_per_million(
    price: Price, prompt_tokens: int, cached_tokens: int, completion_tokens: int
) -> Decimal:
    """USD per 1M tokens (prompt + completion) of this model for a given token mix.

    With no tokens at all the conventional 3:1 input:output mix (no cache hits) is used.
    """
    tokens = prompt_tokens + completion_tokens
    if tokens == 0:
        return DEFAULT_INPUT_SHARE * price.input + (1 - DEFAULT_INPUT_SHARE) * price.output
    return cost(price, prompt_tokens, cached_tokens, completion_tokens) * MILLION / tokens


@dataclass(frozen=True, slots=True)
class PriceBook:
    """All dated prices, by model name (`provider/model`)."""

    entries: Mapping[str, tuple[Price, ...]]  # each sorted by effective_from

    @classmethod
    def load(cls, path: Path) -> PriceBook:
        raw = load_yaml_exact(path)
        models = raw.get("models") if isinstance(raw, dict) else None
        if not isinstance(models, dict):
            raise ConfigError(f"{path}: expected a top-level `models:` mapping")
        return cls({str(name): _entries(path, str(name), rows) for name, rows in models.items()})

    def models(self) -> list[str]:
        return sorted(self.entries)

    def price_for(self, model: str, at: datetime | date | None = None) -> Price:
        """The entry in force at `at` (default: now, UTC); ConfigError if there is none."""
        entries = self.entries.get(model)
        if not entries:
            raise ConfigError(f"no price for paid model {model!r} in pricing.yaml")
        day = _as_date(at)
        in_force = [p for p in entries if p.effective_from <= day]
        if not in_force:
            raise ConfigError(
                f"no price for {model!r} effective on {day} "
                f"(first entry: {entries[0].effective_from})"
            )
        return in_force[-1]

    def require_prices(self, paid_models: Iterable[str]) -> None:
        """Fail at start-up, naming the model, when a configured paid model has no price now."""
        for model in paid_models:
            self.price_for(model)


def _as_date(at: datetime | date | None) -> date:
    if at is None:
        return datetime.now(UTC).date()
    if isinstance(at, datetime):
        return (at.astimezone(UTC) if at.tzinfo else at).date()
    return at


def _entries(path: Path, model: str, rows: object) -> tuple[Price, ...]:
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path}: {model}: expected a non-empty list of dated entries")
    prices = [_price(path, model, row) for row in rows]
    prices.sort(key=lambda p: p.effective_from)
    days = [p.effective_from for p in prices]
    if len(set(days)) != len(days):
        raise ConfigError(f"{path}: {model}: two entries share an effective_from date")
    return tuple(prices)


def _price(path: Path, model: str, row: object) -> Price:
    where = f"{path}: {model}"
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: each entry must be a mapping")
    day = row.get("effective_from")
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"{where}: effective_from: not a date: {day!r}") from None
    if not isinstance(day, date) or isinstance(day, datetime):
        raise ConfigError(f"{where}: effective_from must be a date (YYYY-MM-DD)")
    missing = {"input", "cached_input", "output"} - row.keys()
    if missing:
        raise ConfigError(f"{where}: missing {sorted(missing)}")
    return Price(
        model=model,
        effective_from=day,
        input=to_decimal(row["input"], f"{where}: input"),
        cached_input=to_decimal(row["cached_input"], f"{where}: cached_input"),
        output=to_decimal(row["output"], f"{where}: output"),
        cache_write=None if row.get("cache_write") is None
        else to_decimal(row["cache_write"], f"{where}: cache_write"),
    )
