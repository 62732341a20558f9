"""What the accountant tells about spend as it happens: the spend guard, budget alerts and
their webhook, joined to the gauges.

  paid_settled(key, usd)          a paid call settled: the guards' windows (spend_guard.py)
  budget_used(key, budgets, r)    a reservation left this much of a key's budgets
                                  (tenancy/budget_alerts.py: used share, thresholds)
  view(key)                       the guard's state for one request (→ router BudgetView)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal

from spillgate.alerts import WebhookSender
from spillgate.costing.pricing import decimal_text
from spillgate.routing.router import BudgetView
from spillgate.settings import Settings
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.tenancy.budget_alerts import BudgetAlert, BudgetAlerts
from spillgate.tenancy.spend_guard import GuardConfig, GuardEvent, SpendGuard

log = logging.getLogger(__name__)


class SpendWatch:
    def __init__(self, guard_config: GuardConfig, thresholds: list[float],
                 metrics: GatewayMetrics, webhook: WebhookSender | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._webhook = webhook
        self.guard = SpendGuard(guard_config, clock, self._guard_changed)
        self.alerts = BudgetAlerts(thresholds)
        self._export_alert_counts()

    @classmethod
    def from_settings(cls, settings: Settings, metrics: GatewayMetrics) -> SpendWatch:
        url = settings.alert_webhook_url()
        a = settings.alerts
        webhook = None if url is None else WebhookSender(
            url, queue_size=a.webhook_queue, attempts=a.webhook_attempts)
        return cls(GuardConfig.from_settings(settings.spend_guard), a.budget_thresholds,
                   metrics, webhook)

    async def start(self) -> None:
        if self._webhook is not None:
            await self._webhook.start()

    async def aclose(self) -> None:
        if self._webhook is not None:
            await self._webhook.aclose()

    def view(self, key_id: str | None, paid_allowed: bool) -> BudgetView:
        guard = self.guard.view(key_id)
        return BudgetView(paid_allowed, guard.open, self.guard.config.fallback_local,
                          guard.retry_after_s or 60.0)

    def paid_settled(self, key_id: str | None, usd: Decimal) -> None:
        self.guard.observe(key_id, usd)

    def budget_used(self, key_id: str, budgets: dict[str, Decimal | None],
                    remaining: dict[str, Decimal | None]) -> None:
        """`budgets` and `remaining`: period ("day", "month") → USD, None without a budget."""
        for period, budget in budgets.items():
            left = remaining.get(period)
            if budget is None or left is None:
                continue
            used, crossed = self.alerts.update(key_id, period, budget, left)
            self._metrics.budget_used.labels(key_id, period).set(float(used))
            for alert in crossed:
                self._budget_alert(alert)
        self._export_alert_counts()

    def _budget_alert(self, alert: BudgetAlert) -> None:
        log.warning("key %s used %s%% of its %s budget ($%s): past the %s%% alert threshold",
                    alert.key_id, decimal_text(round(alert.used_share * 100, 1)),
                    alert.period, decimal_text(alert.budget_usd),
                    decimal_text(alert.threshold * 100))
        if self._webhook is not None:
            self._webhook.submit(alert.to_dict())

    def _export_alert_counts(self) -> None:
        for (period, threshold), count in self.alerts.counts().items():
            self._metrics.budget_alerts.labels(period, threshold).set(count)

    def _guard_changed(self, event: GuardEvent) -> None:
        if event.scope == "node":
            self._metrics.spend_guard_open.labels("node").set(int(event.opened))
        else:
            self._metrics.spend_guard_open.labels("key").set(self.guard.open_keys())
            key_id = event.scope.removeprefix("key:")
            self._metrics.key_guard_open.labels(key_id).set(int(event.opened))
        if self._webhook is not None:
            self._webhook.submit({
                "kind": "spend_guard_opened" if event.opened else "spend_guard_closed",
                "scope": event.scope, "why": event.why,
                "window_usd": decimal_text(event.window_usd),
                "baseline_usd": None if event.baseline_usd is None
                else decimal_text(event.baseline_usd),
            })
