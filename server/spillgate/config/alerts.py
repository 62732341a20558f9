"""`alerts:` budget alert thresholds and the webhook they are sent to."""

from __future__ import annotations

from pydantic import Field, model_validator

from spillgate.config.base import StrictModel


class AlertSettings(StrictModel):
    budget_thresholds: list[float] = Field(
        default_factory=lambda: [0.8, 1.0], description="Shares of a key's daily and monthly "
        "budget that raise an alert (gauge, webhook) when used (spent or reserved).")
    webhook_url_env: str | None = Field(
        None, description="Env var holding a URL that alert events are POSTed to as JSON "
        "(retried with backoff, off the request path). Unset: gauges only.")
    webhook_queue: int = Field(256, ge=1, description="Alert events waiting to be sent; "
                               "more are dropped (and logged), never blocking a request.")
    webhook_attempts: int = Field(5, ge=1, le=20, description="Tries per event.")

    @model_validator(mode="after")
    def _shares(self) -> AlertSettings:
        if any(not 0 < t <= 10 for t in self.budget_thresholds):
            raise ValueError("alerts.budget_thresholds: each share must be in (0, 10]")
        return self
