"""`routes:` model aliases: policy, targets, objectives, cascade, canary arms, cache."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from spillgate.config.base import StrictModel


class CascadeSettings(StrictModel):
    """`policy: cascade`: the local model drafts, its token log-probabilities decide."""

    signal: Literal["mean_logprob", "min_logprob", "first_k_logprob"] = Field(
        "mean_logprob", description="Confidence of a draft: the mean, the minimum, or the "
        "mean over the first `first_k` tokens of its token log-probabilities.",
    )
    threshold: float = Field(
        -1.0, le=0, description="Keep the draft when its confidence is at least this "
        "(a log-probability, <= 0); escalate to the paid model otherwise. Tune it with "
        "`spillgate eval cascade` on your own data.",
    )
    first_k: int = Field(8, ge=1, description="Tokens the first_k_logprob signal averages.")
    stream: Literal["local", "buffer"] = Field(
        "local", description="Streams on a cascade route: `local` streams the local model "
        "without a cascade; `buffer` drafts in full, then sends the kept draft or the paid "
        "answer as one buffered stream (no early first token).",
    )


class ArmSettings(StrictModel):
    """One arm of a canary split: a name, a weight, and what it changes on the route."""

    name: str = Field(min_length=1, max_length=64, description="Tagged on each ledger row.")
    weight: float = Field(gt=0, description="Share of traffic (relative to the other arms).")
    policy: Literal["local", "api", "auto", "cascade"] | None = Field(
        None, description="Overrides the route's policy.")
    local: str | None = Field(None, description="Overrides the route's local model.")
    paid: str | None = Field(None, description="Overrides the route's paid model.")
    fallbacks: list[str] | None = Field(None, description="Overrides the paid fallbacks.")
    cascade: CascadeSettings | None = Field(None, description="Overrides cascade settings.")


class RouteSettings(StrictModel):
    name: str = Field(description="The `model` a client sends to use this route.")
    policy: Literal["local", "api", "auto", "cascade"] = Field(
        description="local: local only; api: the paid model; auto: local first, spill when "
        "the local tier cannot serve in time; cascade: the local model drafts and the paid "
        "model answers when the draft is unsure (`cascade`)."
    )
    local: str | None = Field(None, description="Local model served by this route.")
    paid: str | None = Field(None, description="Paid model `<provider>/<model>` to spill to.")
    fallbacks: list[str] = Field(
        default_factory=list, description="Ordered paid models tried when `paid` fails."
    )
    local_only: bool = Field(False, description="Treat every request on this route as sensitive.")
    ttft_slo_ms: float = Field(2000.0, gt=0, description="Time-to-first-token objective.")
    local_deadline_ms: float | None = Field(
        None, gt=0, description="auto routes, streams: a local request with no first token by "
        "then is cancelled and sent to the paid model (before any byte reached the client; "
        "never for sensitive requests). Default: 60% of ttft_slo_ms, leaving the rest for "
        "the paid API's own first token."
    )
    on_budget_exhausted: Literal["local", "reject"] = Field(
        "local", description="With no paid budget left: stay local (and queue) or answer 429."
    )
    router: Path | None = Field(
        None, description="auto routes: a learned dispatcher (`spillgate router train`) that "
        "sends the prompts it scores hardest to the paid model (reason router_paid) and the "
        "rest local (router_local); overflow and sensitivity still apply."
    )
    paid_share: float | None = Field(
        None, gt=0, lt=1, description="With `router`: the share of the router's training "
        "prompts that score above the threshold (calibrated when it was trained)."
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="With `router`: a raw score threshold instead of "
        "paid_share (scores above it go to the paid model)."
    )
    cascade: CascadeSettings = Field(
        default_factory=CascadeSettings, description="policy cascade: signal and threshold.")
    arms: list[ArmSettings] = Field(
        default_factory=list, description="Canary: split the route's traffic between arms "
        "by a stable hash of `x-spillgate-arm-key` (else the API key); each row is tagged.")
    cache: Literal["off", "exact", "semantic"] = Field(
        "off", description="Response cache of this route (chat completions): off; exact "
        "repeats only; or exact plus guarded paraphrase matches (see the top-level `cache`)."
    )
    cache_temperature: bool = Field(
        False, description="Also cache requests sampled at temperature > 0 (absent means the "
        "API default, 1). Off: only temperature 0 answers are cached."
    )
    cache_tool_calls: bool = Field(
        False, description="Also cache answers that call tools (off: never stored)."
    )

    @model_validator(mode="after")
    def _targets_present(self) -> RouteSettings:
        if self.policy in ("local", "auto", "cascade") and not self.local:
            raise ValueError(f"route {self.name!r}: policy {self.policy} needs `local`")
        if self.policy in ("api", "auto", "cascade") and not self.paid:
            raise ValueError(f"route {self.name!r}: policy {self.policy} needs `paid`")
        if self.router is not None and self.policy != "auto":
            raise ValueError(f"route {self.name!r}: `router` needs policy auto (a local and a "
                             "paid model to choose between)")
        if self.router is not None and (self.paid_share is None) == (self.threshold is None):
            raise ValueError(f"route {self.name!r}: with `router`, set exactly one of "
                             "`paid_share` and `threshold`")
        if self.router is None and (self.paid_share is not None or self.threshold is not None):
            raise ValueError(f"route {self.name!r}: `paid_share` and `threshold` need `router`")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"route {self.name!r}: arm names repeat")
        for arm in self.arms:
            self.arm_settings(arm)  # each arm is a complete route of its own
        return self

    def arm_settings(self, arm: ArmSettings) -> RouteSettings:
        """This route as one of its arms sees it (validated again: an arm may not leave a
        policy without its models)."""
        changes = arm.model_dump(exclude={"name", "weight"}, exclude_none=True)
        return RouteSettings.model_validate({**self.model_dump(), **changes, "arms": []})
