"""The report's window: UTC edges, hour or day buckets, and the bound on how many."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from spillgate.ledger.rollup import as_utc

Bucket = Literal["hour", "day"]
MAX_BUCKETS = 10_000
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class WindowTooLarge(ValueError):
    """The window would have more than MAX_BUCKETS buckets."""


def check_window(since: datetime, until: datetime, bucket: Bucket) -> tuple[datetime, datetime]:
    """The window in UTC; ValueError if empty or of an unknown bucket, WindowTooLarge if it
    has more than MAX_BUCKETS buckets (checked by arithmetic, before anything is built)."""
    if bucket not in _STEP:
        raise ValueError(f"bucket must be hour or day, got {bucket!r}")
    since, until = as_utc(since), as_utc(until)
    if until <= since:
        raise ValueError("until must be after since")
    count = -(-(until - bucket_start(since, bucket)) // _STEP[bucket])
    if count > MAX_BUCKETS:
        raise WindowTooLarge(f"the window has {count:,} {bucket} buckets; at most "
                             f"{MAX_BUCKETS:,}: shorten it or use bucket=day")  # fmt: skip
    return since, until


def bucket_start(moment: datetime, bucket: Bucket) -> datetime:
    if bucket == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[datetime]:
    starts, current = [], bucket_start(since, bucket)
    while current < until:
        starts.append(current)
        current += _STEP[bucket]
    return starts
