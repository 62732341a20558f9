"""`rules:` stage rules matched before any other routing (spillgate.routing.stage_rules)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from spillgate.config.base import StrictModel

# 24 characters: `rule:<name>+<auto reason>+fallback` must fit the ledger's 64-character
# reason column.
_RULE_NAME = r"^[A-Za-z0-9_.-]{1,24}$"


class RuleMatchSettings(StrictModel):
    tags: dict[str, str] = Field(
        default_factory=dict, description="x-spillgate-tags the request must carry (all).")
    key_ids: list[str] = Field(default_factory=list, description="Virtual key ids (any).")
    endpoints: list[Literal["chat/completions", "completions", "embeddings"]] = Field(
        default_factory=list, description="Endpoints (any).")
    models: list[str] = Field(default_factory=list, description="`model` asked (any).")
    min_prompt_tokens: int | None = Field(
        None, ge=0, description="Prompt estimate (body bytes / 4) at least this.")
    max_prompt_tokens: int | None = Field(
        None, ge=0, description="Prompt estimate (body bytes / 4) at most this.")
    tools: bool | None = Field(None, description="true: requests with tools; false: without.")


class RuleSettings(StrictModel):
    name: str = Field(pattern=_RULE_NAME, description="Shown as reason `rule:<name>`.")
    match: RuleMatchSettings = Field(
        default_factory=RuleMatchSettings, description="Conditions, all of which must hold.")
    tier: Literal["local", "api"] | None = Field(
        None, description="Pin this tier on the asked route.")
    model: str | None = Field(None, description="Pin this model (a route or model name).")

    @model_validator(mode="after")
    def _one_pin(self) -> RuleSettings:
        if (self.tier is None) == (self.model is None):
            raise ValueError(f"rule {self.name!r}: set exactly one of `tier` and `model`")
        low, high = self.match.min_prompt_tokens, self.match.max_prompt_tokens
        if low is not None and high is not None and low > high:
            raise ValueError(f"rule {self.name!r}: min_prompt_tokens exceeds max_prompt_tokens")
        return self
