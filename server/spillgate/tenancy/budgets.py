"""A paid call's budget arithmetic: the true upper bound of what a request can cost.

The reservation against a key's daily and monthly counters (ledger/budgets.py, one atomic
statement per counter) is this bound: BPE tokens never outnumber the UTF-8 bytes they encode,
so the request body's size in bytes bounds the prompt tokens, and `max_tokens` (times `n`)
bounds the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

MILLION = Decimal(1_000_000)


class TokenPrice(Protocol):
    """What reservation needs of a price entry: USD per 1M tokens."""

    @property
    def input(self) -> Decimal: ...

    @property
    def output(self) -> Decimal: ...

    @property
    def dearest_input(self) -> Decimal: ...


def worst_case_cost(prompt_tokens_estimate: int, max_tokens: int, price: TokenPrice) -> Decimal:
    """Upper bound of a call's cost: every prompt token uncached, every allowed output token.

    `max_tokens` must be the clamped output limit the upstream will enforce; without it the
    cost of a paid call has no bound and cannot be reserved.
    """
    if prompt_tokens_estimate < 0 or max_tokens < 0:
        raise ValueError("token counts must be >= 0")
    return (prompt_tokens_estimate * price.dearest_input + max_tokens * price.output) / MILLION


# An image given by URL is billed by its pixels, not by the URL's bytes. The dearest rule in
# pricing.yaml's providers: gpt-4o-mini bills 2,833 + 5,667 tokens per 512-px tile, and a
# high-detail image has at most 8 tiles (48,169 tokens); Anthropic caps near 1,600.
IMAGE_URL_TOKENS = 48_169


def prompt_bound(raw: bytes, body: Mapping[str, Any] | None = None) -> int:
    """Upper bound of the prompt tokens any BPE tokenizer makes of this request body: its
    UTF-8 size in bytes (the body holds every billed text, plus JSON syntax that the chat
    template's few tokens per message never outnumber), plus IMAGE_URL_TOKENS for each image
    given by http(s) URL (an inline `data:` image is billed below its base64 size)."""
    return len(raw) + IMAGE_URL_TOKENS * _image_urls(body or {})


def _image_urls(body: Mapping[str, Any]) -> int:
    count = 0
    messages = body.get("messages")
    # Counted before the body's shape is checked (the budget is reserved first): any JSON
    # value may stand here, and only a list holds messages.
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url", "") if isinstance(image, dict) else str(image or "")
                count += not str(url).startswith("data:")
    return count
