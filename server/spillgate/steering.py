"""The decide step's first two stages, between the pure routing modules and the service:
stage rules (matched first) and the learned dispatcher's score.

The decisions themselves are pure (`routing.stage_rules`, `routing.learned`); this module
gathers their facts from the request and runs the scoring off the event loop when the prompt
is long enough to cost more than a thread hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spillgate.routing.features import TOOLS
from spillgate.routing.learned import prompt_text
from spillgate.routing.router import Route
from spillgate.routing.routes import RouteTable
from spillgate.routing.stage_rules import RuleFacts, StageRule, first_match
from spillgate.types import JSON, Endpoint, Tier

# Prompts longer than this are scored in a worker thread: a short one costs a few tenths of
# a millisecond inline (scripts/bench_router_score.py), the thread hop about 50 µs.
SCORE_INLINE_CHARS = 512


@dataclass(frozen=True, slots=True)
class Steer:
    route: Route
    rule: StageRule | None = None

    @property
    def tier_pin(self) -> Tier | None:
        return None if self.rule is None else self.rule.tier

    @property
    def pinned_by(self) -> str:
        """Who pinned the tier, as a refusal names it."""
        return "x-spillgate-tier" if self.rule is None or self.rule.tier is None \
            else f"rule {self.rule.name}"

    def reason(self, decided: str) -> str:
        """`rule:<name>` when the rule chose the tier; a model pin onto an auto route keeps
        the auto route's own reason after it (`rule:<name>+overflow_queue`)."""
        if self.rule is None:
            return decided
        if self.rule.model is not None and self.route.policy == "auto":
            return f"{self.rule.reason}+{decided}"
        return self.rule.reason


def steer(rules: Sequence[StageRule], routes: RouteTable, asked: Route, endpoint: Endpoint,
          key_id: str | None, tags: Mapping[str, str], prompt_tokens: int,
          features: frozenset[str]) -> Steer:
    """The route to use and the stage rule that chose it, if any."""
    if not rules:
        return Steer(asked)
    facts = RuleFacts(model=asked.name, endpoint=endpoint, key_id=key_id, tags=tags,
                      prompt_tokens=prompt_tokens, tools=TOOLS in features)
    honours: dict[Tier, bool] = {"local": asked.local is not None, "api": bool(asked.paid)}
    rule = first_match(rules, facts, honours)
    if rule is None:
        return Steer(asked)
    return Steer(routes.resolve(rule.model) if rule.model else asked, rule)


async def dispatch_choice(route: Route, endpoint: Endpoint, body: JSON, sensitive: bool,
                          tier_pin: Tier | None) -> Tier | None:
    """The learned dispatcher's tier for this request, or None when it does not apply
    (no dispatcher, not an auto route, sensitive, pinned, or an embeddings request)."""
    dispatcher = route.dispatcher
    if (dispatcher is None or route.policy != "auto" or sensitive or route.local_only
            or tier_pin is not None or endpoint == "embeddings"):
        return None
    text = prompt_text(body)
    score = dispatcher.score(text) if len(text) <= SCORE_INLINE_CHARS \
        else await asyncio.to_thread(dispatcher.score, text)
    return "api" if dispatcher.wants_paid(score) else "local"
