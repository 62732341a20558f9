"""What the service knows about one request, handed to the accountant at start and finish.

Never holds prompt or completion text: only counts, names and entity classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from spillgate.types import Tier

MONEY_SCALE = 10  # digits after the point the ledger keeps: numeric(20, 10)
MONEY_UNIT = Decimal(1).scaleb(-MONEY_SCALE)


def ledger_money(amount: Decimal) -> Decimal:
    """An amount as the ledger stores it (1e-10 USD, half to even)."""
    return amount.quantize(MONEY_UNIT, rounding=ROUND_HALF_EVEN)


def usd_text(amount: Decimal) -> str:
    """The cost a reply tells (header or stream comment): the stored amount to 8 digits.
    Rounding the raw amount straight to 8 digits could differ from the row in the last digit
    (0.00001056500001 -> ...57, but the row keeps 0.0000105650 -> ...56)."""
    return f"{ledger_money(amount):.8f}"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    measured: bool = True
    cache_write_tokens: int = 0  # of prompt_tokens, written to the provider's prompt cache

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            # LiteLLM's name for it, set by the Anthropic translation (OpenAI has no writes).
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        )


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    key_id: str | None
    route: str
    stream: bool
    started_at: float  # epoch seconds
    tags: dict[str, str] = field(default_factory=dict)
    sensitivity: frozenset[str] = frozenset()
    reason: str = ""
    backend: str = ""
    tier: Tier = "local"
    model: str = ""
    max_output_tokens: int = 0
    prompt_estimate: int = 0
    prompt_bound: int = 0  # prompt tokens can never exceed this (UTF-8 bytes of the body)
    reserved_usd: Decimal = Decimal(0)
    claimed_backend: str | None = None  # local slot counted for admission until settled
    # filled at finish
    usage: Usage = field(default_factory=Usage)
    status: int = 200
    ttft_s: float | None = None
    latency_s: float | None = None
    cost_usd: Decimal = Decimal(0)
    counterfactual_usd: Decimal = Decimal(0)
    # cascade and canary (issue 15): the arm that served it, the local draft's hardware cost
    # and its confidence (escalated rows carry the paid cost in cost_usd besides)
    arm: str = ""
    draft_usd: Decimal = Decimal(0)
    confidence: float | None = None
    # a response-cache hit: its kind ('exact' | 'semantic'), what the original answer cost
    # and the tokens it processed (this request processed none)
    cache: str = ""
    avoided_usd: Decimal = Decimal(0)
    saved_tokens: int = 0
