"""Soft budget thresholds: which share of a key's daily and monthly paid budget is used.

Used means spent plus reserved (what the ledger's counters hold after a reservation), so an
alert fires before the money is gone, not after. Each (key, period) remembers how many
thresholds it has crossed: an alert is raised once per upward crossing, and a new day or
month (the used share falls back) re-arms it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from spillgate.costing.pricing import decimal_text


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    key_id: str
    period: str  # "day" or "month"
    threshold: Decimal
    used_share: Decimal
    budget_usd: Decimal

    def to_dict(self) -> dict[str, str]:
        return {"kind": "budget_threshold", "key_id": self.key_id, "period": self.period,
                "threshold": decimal_text(self.threshold),
                "used_share": decimal_text(self.used_share),
                "budget_usd": decimal_text(self.budget_usd)}


def threshold_label(threshold: Decimal) -> str:
    """The gauge label of a threshold: 0.8 → "0.8", 1.0 → "1"."""
    return decimal_text(threshold)


class BudgetAlerts:
    def __init__(self, thresholds: Sequence[float | Decimal]) -> None:
        self.thresholds = tuple(sorted({Decimal(str(t)) for t in thresholds}))
        self._level: dict[tuple[str, str], int] = {}

    def update(self, key_id: str, period: str, budget_usd: Decimal,
               remaining_usd: Decimal) -> tuple[Decimal, list[BudgetAlert]]:
        """The used share, and the thresholds it crossed upward since the last update."""
        used = Decimal(1) if budget_usd <= 0 else (budget_usd - remaining_usd) / budget_usd
        level = sum(used >= t for t in self.thresholds)
        before = self._level.get((key_id, period), 0)
        self._level[(key_id, period)] = level
        crossed = self.thresholds[before:level]
        return used, [BudgetAlert(key_id, period, t, used, budget_usd) for t in crossed]

    def counts(self) -> dict[tuple[str, str], int]:
        """(period, threshold label) → keys at or over it, for every pair (zeros included)."""
        out = {(p, threshold_label(t)): 0 for p in ("day", "month") for t in self.thresholds}
        for (_, period), level in self._level.items():
            for t in self.thresholds[:level]:
                out[(period, threshold_label(t))] += 1
        return out
