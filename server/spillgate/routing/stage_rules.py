"""Stage rules: the operator's table, matched first, pinning a tier or a model.

A pipeline knows which stage needs which tier (extraction local, synthesis on the paid
model): a rule says so on facts of the request — its tags (`x-spillgate-tags:
stage=synthesis`), key, endpoint, prompt size, tools, the model asked — and the first rule
that matches pins a tier (`local`/`api`) or a model. The reason code becomes
`rule:<name>`.

One top-level list, not one per route: rules often cut across models (one key, one stage),
one ordered table reads top to bottom like a firewall's, and a per-route rule is just a rule
matching `models: [that route]`.

Sensitivity still wins: the router refuses a paid pin for a sensitive request (403) as it
refuses the `x-spillgate-tier: api` header. A tier pin the route cannot honour (api on a
route with no paid model, local on one with no local model) does not match, so the next
rule, or the route's own policy, decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spillgate.errors import ConfigError, ModelNotFound
from spillgate.routing.routes import RouteTable
from spillgate.settings import RuleSettings
from spillgate.types import Endpoint, Tier


@dataclass(frozen=True, slots=True)
class RuleFacts:
    """What a rule may look at; all known right after admission, before any scan."""

    model: str
    endpoint: Endpoint
    key_id: str | None
    tags: Mapping[str, str]
    prompt_tokens: int  # the gateway's estimate (body bytes / 4)
    tools: bool


@dataclass(frozen=True, slots=True)
class StageRule:
    name: str
    tier: Tier | None
    model: str | None
    tags: Mapping[str, str]
    key_ids: frozenset[str]
    endpoints: frozenset[str]
    models: frozenset[str]
    min_prompt_tokens: int | None
    max_prompt_tokens: int | None
    tools: bool | None

    @classmethod
    def from_settings(cls, rs: RuleSettings) -> StageRule:
        m = rs.match
        return cls(rs.name, rs.tier, rs.model, dict(m.tags), frozenset(m.key_ids),
                   frozenset(m.endpoints), frozenset(m.models), m.min_prompt_tokens,
                   m.max_prompt_tokens, m.tools)

    def matches(self, facts: RuleFacts) -> bool:
        """Every condition the rule sets holds (an unset condition matches anything)."""
        return (all(facts.tags.get(k) == v for k, v in self.tags.items())
                and (not self.key_ids or facts.key_id in self.key_ids)
                and (not self.endpoints or facts.endpoint in self.endpoints)
                and (not self.models or facts.model in self.models)
                and (self.min_prompt_tokens is None
                     or facts.prompt_tokens >= self.min_prompt_tokens)
                and (self.max_prompt_tokens is None
                     or facts.prompt_tokens <= self.max_prompt_tokens)
                and (self.tools is None or facts.tools == self.tools))

    @property
    def reason(self) -> str:
        return f"rule:{self.name}"


def first_match(rules: Sequence[StageRule], facts: RuleFacts,
                honours: Mapping[Tier, bool]) -> StageRule | None:
    """The first rule that matches and whose pin the asked route can honour
    (`honours[tier]`: the route has a target of that tier); a model pin always can."""
    for rule in rules:
        if rule.tier is not None and not honours.get(rule.tier, False):
            continue
        if rule.matches(facts):
            return rule
    return None


def build_rules(configured: Sequence[RuleSettings], routes: RouteTable) -> tuple[StageRule, ...]:
    """The rule table, each model pin checked against the routes once at start-up."""
    for rs in configured:
        for name in ([rs.model] if rs.model else []) + list(rs.match.models):
            try:
                routes.resolve(name)
            except ModelNotFound:
                raise ConfigError(f"rules.{rs.name}: no route or model is named {name!r} "
                                  f"(known: {', '.join(routes.names())})") from None
    return tuple(StageRule.from_settings(rs) for rs in configured)
