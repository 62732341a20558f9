"""What a report splits request rows by (a `GroupKey`), from one row's columns: pure.

The rollup (rollup.py) keeps its sums per key; the ledger's writer thread makes one key per
final row it writes, nearly all of them alike (a few hours, keys and tag sets), so
`group_key` is memoised: the key's JSON tags and flags are worked out once per distinct
row, not once per row (issue 14: the writer's GIL time is taken from the event loop).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Route reason codes of a paid answer that local capacity should have served (spill).
SPILL_REASONS = ("overflow", "local_unavailable", "local_queue_full", "local_context_exceeded",
                 "telemetry_unknown")  # fmt: skip


@dataclass(frozen=True, slots=True, order=True)
class GroupKey:
    """What a report splits by: the hour a row started in, key, tag set, tier, flags."""

    hour: datetime
    key_id: str
    tags: str  # canonical JSON object
    tier: str
    sensitive: bool
    spill: bool

    def tag_pairs(self) -> list[str]:
        return [f"{k}={v}" for k, v in json.loads(self.tags).items()]


def as_utc(value: datetime | str) -> datetime:
    """Aware UTC datetime; naive values (SQLite) are taken as UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def hour_of(moment: datetime) -> datetime:
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def is_sensitive(value: Any) -> bool:
    """`sensitivity` is empty for ordinary data, else the entity classes found (comma list;
    a JSON list in older rows)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return bool(json.loads(text))
        return text not in ("", "none", "public")
    return bool(value)


def is_spill(tier: str, sensitive: bool, reason: str) -> bool:
    return tier == "api" and not sensitive and reason.startswith(SPILL_REASONS)


def canonical_tags(tags: Any) -> str:
    parsed = json.loads(tags) if isinstance(tags, str) else dict(tags or {})
    return json.dumps({str(k): str(v) for k, v in parsed.items()}, sort_keys=True,
                      separators=(",", ":"))  # fmt: skip


def group_key(hour: datetime, key_id: Any, tags: Any, tier: Any, sensitivity: Any,
              reason: Any) -> GroupKey:  # fmt: skip
    """The key of a row with these columns. Memoised on the arguments' values and types;
    a tags dict by its items, and only when they are all text (1, 1.0 and True are equal
    cache keys but not equal text); anything unhashable is worked out as it is."""
    hour = hour_of(hour)
    if tags.__class__ is dict:
        if (items := text_items(tags)) is None:
            return _group_key.__wrapped__(hour, key_id, tags, tier, sensitivity, reason)
        tags = items  # canonical_tags makes the same dict of them again
    try:
        return _group_key(hour, key_id, tags, tier, sensitivity, reason)
    except TypeError:  # unhashable
        return _group_key.__wrapped__(hour, key_id, tags, tier, sensitivity, reason)


def text_items(tags: dict[Any, Any]) -> tuple[tuple[str, str], ...] | None:
    """A dict's items as a cache key, when its keys and values are all `str` (not a
    subclass): equal keys then mean equal text. None otherwise."""
    if _TEXT.issuperset(map(type, tags)) and _TEXT.issuperset(map(type, tags.values())):
        return tuple(tags.items())
    return None


_TEXT = frozenset({str})


@functools.lru_cache(maxsize=4096, typed=True)
def _group_key(hour: datetime, key_id: Any, tags: Any, tier: Any, sensitivity: Any,
               reason: Any) -> GroupKey:  # fmt: skip
    tier_text = str(tier or "local")
    sensitive = is_sensitive(sensitivity)
    return GroupKey(hour, str(key_id or ""), canonical_tags(tags), tier_text,
                    sensitive, is_spill(tier_text, sensitive, str(reason or "")))  # fmt: skip
