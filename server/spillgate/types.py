"""The kernel's shared vocabulary: names every layer may import (nothing here imports spillgate).

Kept apart from `backends/` and `service` so routing, accounting and the engines can speak of a
tier, an endpoint or a client without reaching up into the layers that act on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Endpoint = Literal["chat/completions", "completions", "embeddings"]
Tier = Literal["local", "api"]
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Client:
    """Who is calling: the key row's id (None with auth off) and its local-only policy."""

    key_id: str | None = None
    local_only: bool = False
    cache_namespace: str | None = None  # response-cache tenant shared by several keys
