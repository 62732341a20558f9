"""Hourly rollup of the `requests` table, so a report never reads every row.

A report needs, per time bucket, per key and per tag set, only sums of a few integer and
money columns, split by tier, sensitivity and spill. `request_rollup` holds those sums per
(UTC hour, key, tag set, tier, sensitive, spill) group. The ledger's batcher keeps it up to
date in the same transaction as the rows it writes (`deltas` + `apply_in`): adding each final
row's contribution and subtracting the one of a row it overwrites, so the rollup always
equals a GROUP BY over the table's final rows. Recovery adds the rows it closes.

A report over [since, until) reads the whole hours inside the window from the rollup and
the rows of the partial hours at its two edges with one GROUP BY (`raw_groups_query`), so
its cost grows with hours x keys x tag sets, not with rows. The same GROUP BY fills the
rollup once for a ledger written before it existed (migration step 3).

Rows that are still `open` (and the `reserved`/`pending` states of older ledgers) carry no
final cost and contribute nothing. Money sums are exact (Money: integer 1e-10 units on
SQLite, numeric on PostgreSQL).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    case,
    cast,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

# The keys' pure part (re-exported: reports and the ledger read it here)
from spillgate.ledger.group_key import SPILL_REASONS as SPILL_REASONS
from spillgate.ledger.group_key import GroupKey as GroupKey
from spillgate.ledger.group_key import as_utc as as_utc
from spillgate.ledger.group_key import canonical_tags as canonical_tags
from spillgate.ledger.group_key import group_key as group_key
from spillgate.ledger.group_key import hour_of as hour_of
from spillgate.ledger.group_key import is_sensitive as is_sensitive
from spillgate.ledger.group_key import is_spill as is_spill
from spillgate.ledger.record import ledger_money
from spillgate.ledger.schema import Money, UTCDateTime, requests

NOT_FINAL = ("open", "reserved", "pending")
ZERO = Decimal(0)

# Its own MetaData: migration step 1 creates schema.metadata's tables and must stay frozen.
rollup_metadata = MetaData()
GROUP_COLUMNS = ("hour", "key_id", "tags", "tier", "sensitive", "spill")
SUM_COLUMNS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd",
               "counterfactual_usd", "draft_usd")  # fmt: skip
request_rollup = Table(
    "request_rollup",
    rollup_metadata,
    Column("hour", UTCDateTime(), primary_key=True),  # UTC hour the rows started in
    Column("key_id", String(64), primary_key=True),  # "" = no virtual key
    Column("tags", Text(), primary_key=True),  # canonical JSON (sorted keys)
    Column("tier", String(8), primary_key=True),
    Column("sensitive", Boolean(), primary_key=True),
    Column("spill", Boolean(), primary_key=True),
    Column("requests", BigInteger(), nullable=False, default=0),
    Column("prompt_tokens", BigInteger(), nullable=False, default=0),
    Column("cached_tokens", BigInteger(), nullable=False, default=0),
    Column("completion_tokens", BigInteger(), nullable=False, default=0),
    Column("cost_usd", Money(), nullable=False, default=ZERO),
    Column("counterfactual_usd", Money(), nullable=False, default=ZERO),
    # cascade drafts' hardware share, on whichever row the request ended as (migration 13)
    Column("draft_usd", Money(), nullable=False, default=ZERO),
)


@dataclass(slots=True)
class GroupSums:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = ZERO
    counterfactual_usd: Decimal = ZERO
    draft_usd: Decimal = ZERO

    def add(self, other: GroupSums, sign: int = 1) -> None:
        self.requests += sign * other.requests
        self.prompt_tokens += sign * other.prompt_tokens
        self.cached_tokens += sign * other.cached_tokens
        self.completion_tokens += sign * other.completion_tokens
        self.cost_usd += sign * other.cost_usd
        self.counterfactual_usd += sign * other.counterfactual_usd
        self.draft_usd += sign * other.draft_usd

    def columns(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in SUM_COLUMNS}


Groups = dict[GroupKey, GroupSums]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the hour of a view that is not split by hour
NO_TAGS = "{}"
Dimension = Literal["hour", "key_id", "tags"]
DIMENSIONS: tuple[Dimension, ...] = ("hour", "key_id", "tags")


@dataclass(slots=True)
class Views:
    """What a report reads: the sums split by tier and flags, and by one more dimension each:
    by hour (series and totals), by key, by tag set. Much smaller than the groups they come
    from (hours + keys + tag sets, not their product)."""

    hours: Groups = field(default_factory=dict)
    keys: Groups = field(default_factory=dict)
    tags: Groups = field(default_factory=dict)

    def view(self, dim: Dimension) -> Groups:
        return {"hour": self.hours, "key_id": self.keys, "tags": self.tags}[dim]

    def add(self, groups: Groups) -> Views:
        """Project full groups onto the three views and add them."""
        for key, sums in groups.items():
            for dim in DIMENSIONS:
                self.view(dim).setdefault(project(key, dim), GroupSums()).add(sums)
        return self


def project(key: GroupKey, dim: Dimension) -> GroupKey:
    """The key with every dimension but `dim` (and tier and flags) blanked."""
    return GroupKey(key.hour if dim == "hour" else EPOCH, key.key_id if dim == "key_id" else "",
                    key.tags if dim == "tags" else NO_TAGS, key.tier, key.sensitive,
                    key.spill)  # fmt: skip


# --- pure: one row's contribution ------------------------------------------------------
def contribution(row: Mapping[str, Any]) -> tuple[GroupKey, GroupSums] | None:
    """A final row's part of the rollup; None for a row without a final cost yet."""
    if row.get("state") in NOT_FINAL:
        return None
    key = group_key(row["started_at"], row.get("key_id"), row.get("tags"), row.get("tier"),
                    row.get("sensitivity"), row.get("reason"))  # fmt: skip
    return key, GroupSums(
        requests=1,
        prompt_tokens=int(row.get("prompt_tokens") or 0),
        cached_tokens=int(row.get("cached_tokens") or 0),
        completion_tokens=int(row.get("completion_tokens") or 0),
        cost_usd=_money(row.get("cost_usd")),
        counterfactual_usd=_money(row.get("counterfactual_usd")),
        draft_usd=_money(row.get("draft_usd")),
    )


def fold(rows: Iterable[Mapping[str, Any]], into: Groups | None = None, sign: int = 1) -> Groups:
    """Add (sign=1) or remove (sign=-1) rows' contributions to `into` (a new dict if None)."""
    groups: Groups = {} if into is None else into
    for row in rows:
        part = contribution(row)
        if part is not None:
            sums = groups.get(part[0])
            if sums is None:  # (setdefault would build a GroupSums per row)
                sums = groups[part[0]] = GroupSums()
            sums.add(part[1], sign)
    return groups


def _money(value: Any) -> Decimal:
    # as a row stores it (1e-10 USD): raw amounts made the rollup drift from its rows' sums;
    # a Decimal as it is (its str() gives it back unchanged), anything else by its text
    if value is None:
        return ZERO
    return ledger_money(value if value.__class__ is Decimal else Decimal(str(value)))


# --- the batcher's and recovery's updates --------------------------------------------------
_IDS: Any = bindparam("ids", expanding=True)  # statements built once: only the ids change
LOOKUP = (requests.c.request_id, requests.c.started_at, requests.c.key_id, requests.c.tags,
          requests.c.tier, requests.c.sensitivity, requests.c.reason, requests.c.state,
          requests.c.prompt_tokens, requests.c.cached_tokens, requests.c.completion_tokens,
          requests.c.cost_usd, requests.c.counterfactual_usd, requests.c.draft_usd)
_STORED = select(*LOOKUP).where(requests.c.request_id.in_(_IDS),
                                requests.c.state.not_in(NOT_FINAL))
_LOCK_ROWS = (select(requests.c.request_id).where(requests.c.request_id.in_(_IDS))
              .order_by(requests.c.request_id).with_for_update())


async def stored_final_rows(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """`stored_final_rows_sync` on an async connection."""
    return await conn.run_sync(stored_final_rows_sync, ids)


def stored_final_rows_sync(conn: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The final rows already stored under these ids, as the rollup reads them. Usually none:
    a request's stored row is its open one, which counts for nothing and has the final row's
    started_at (the node writes both from one record); a final row is there only when a row
    is written again (after a recovery, or the orphan row recovery made for it).

    On PostgreSQL all these rows, open ones included, stay locked until the transaction ends
    (FOR UPDATE), so another replica's recovery cannot close one of them in between and
    have its contribution counted twice (SQLite: the write transaction is already alone)."""
    if not ids:
        return {}
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_ROWS, {"ids": ids})
    return {row.request_id: dict(row._mapping) for row in conn.execute(_STORED, {"ids": ids})}


def deltas(stored: Mapping[str, Mapping[str, Any]], final: Iterable[dict[str, Any]]) -> Groups:
    """Rollup change of upserting `final` rows over the `stored` final ones: the new
    contributions minus the old. The upsert keeps a stored row's started_at, so the new
    row's hour is the stored one's."""
    groups: Groups = {}
    written = []
    for row in final:
        old = stored.get(row["request_id"])
        written.append(row if old is None else {**row, "started_at": old["started_at"]})
    fold(stored.values(), groups, sign=-1)
    return fold(written, groups)


async def apply_in(conn: AsyncConnection, groups: Groups) -> None:
    """`apply_sync` on an async connection."""
    await conn.run_sync(apply_sync, groups)


def apply_sync(conn: Connection, groups: Groups) -> None:
    """Add the groups' sums to the rollup (an upsert per group, in key order so concurrent
    replicas lock rows in the same order)."""
    params = upsert_params(groups)
    if params:
        conn.execute(rollup_upsert(conn.dialect.name), params)


def upsert_params(groups: Groups) -> list[dict[str, Any]]:
    """The rollup upsert's rows: the groups that change, in key order."""
    return [{**key_columns(k), **v.columns()} for k, v in sorted(groups.items())
            if v != GroupSums()]  # fmt: skip


@functools.cache
def rollup_upsert(dialect_name: str) -> Any:
    """The rollup's upsert, built once per dialect (building it, `excluded` included, costs
    more than executing it for a small batch)."""
    dialect = sqlite if dialect_name == "sqlite" else postgresql
    stmt = dialect.insert(request_rollup)
    return stmt.on_conflict_do_update(
        index_elements=list(GROUP_COLUMNS),
        set_={c: request_rollup.c[c] + stmt.excluded[c] for c in SUM_COLUMNS},
    )


def key_columns(key: GroupKey) -> dict[str, Any]:
    return {"hour": key.hour, "key_id": key.key_id, "tags": key.tags, "tier": key.tier,
            "sensitive": key.sensitive, "spill": key.spill}  # fmt: skip


# --- reading: the rollup's whole hours, raw GROUP BY for the rest --------------------------
def rollup_view_query(dim: Dimension, since: datetime, until: datetime) -> Select[Any]:
    """Rollup sums of the hours h with since <= h < until (hour boundaries), by `dim`."""
    r = request_rollup.c
    split = (r[dim], r.tier, r.sensitive, r.spill)
    sums = (func.sum(r[c], type_=r[c].type).label(c) for c in SUM_COLUMNS)
    return (select(*split, *sums).where(r.hour >= since, r.hour < until)
            .group_by(*split))  # fmt: skip


def from_view_row(dim: Dimension, row: Any) -> tuple[GroupKey, GroupSums]:
    m = row._mapping
    key = GroupKey(as_utc(m["hour"]) if dim == "hour" else EPOCH,
                   m["key_id"] if dim == "key_id" else "",
                   m["tags"] if dim == "tags" else NO_TAGS,
                   m["tier"], bool(m["sensitive"]), bool(m["spill"]))  # fmt: skip
    return key, GroupSums(int(m["requests"]), int(m["prompt_tokens"]), int(m["cached_tokens"]),
                          int(m["completion_tokens"]), _money(m["cost_usd"]),
                          _money(m["counterfactual_usd"]), _money(m["draft_usd"]))  # fmt: skip


def raw_groups_query(dialect: str, since: datetime | None, until: datetime | None,
                     with_draft: bool = True) -> Select[Any]:
    """GROUP BY over the final request rows started in [since, until) (None: unbounded).
    `with_draft=False` for a ledger older than the requests' draft_usd (migration 6)."""
    r = requests.c
    hour = _hour_expr(dialect)
    tags = cast(r.tags, Text())
    spill_prefix = case((or_(*(func.substr(r.reason, 1, len(p)) == p for p in SPILL_REASONS)),
                         1), else_=0)  # fmt: skip
    query = select(
        hour.label("hour"), r.key_id, tags.label("tags"), r.tier, r.sensitivity,
        spill_prefix.label("spill_prefix"), func.count().label("requests"),
        func.sum(r.prompt_tokens).label("prompt_tokens"),
        func.sum(r.cached_tokens).label("cached_tokens"),
        func.sum(r.completion_tokens).label("completion_tokens"),
        func.sum(r.cost_usd, type_=Money()).label("cost_usd"),
        func.sum(r.counterfactual_usd, type_=Money()).label("counterfactual_usd"),
        *([func.sum(r.draft_usd, type_=Money()).label("draft_usd")] if with_draft else []),
    ).where(r.state.not_in(NOT_FINAL))  # fmt: skip
    if since is not None:
        query = query.where(r.started_at >= since)
    if until is not None:
        query = query.where(r.started_at < until)
    return query.group_by(hour, r.key_id, tags, r.tier, r.sensitivity, spill_prefix)


def _hour_expr(dialect: str) -> Any:
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC)
        return func.substr(requests.c.started_at, 1, 13)
    return func.date_trunc("hour", func.timezone("UTC", requests.c.started_at))


def from_raw_row(row: Any) -> tuple[GroupKey, GroupSums]:
    m = row._mapping
    hour = m["hour"]
    moment = datetime.fromisoformat(f"{hour}:00") if isinstance(hour, str) else hour
    tier = str(m["tier"] or "local")
    sensitive = is_sensitive(m["sensitivity"])
    spill = tier == "api" and not sensitive and bool(m["spill_prefix"])
    key = GroupKey(hour_of(moment), str(m["key_id"] or ""), canonical_tags(m["tags"]), tier,
                   sensitive, spill)  # fmt: skip
    return key, GroupSums(
        requests=int(m["requests"]),
        prompt_tokens=int(m["prompt_tokens"] or 0),
        cached_tokens=int(m["cached_tokens"] or 0),
        completion_tokens=int(m["completion_tokens"] or 0),
        cost_usd=_money(m["cost_usd"]),
        counterfactual_usd=_money(m["counterfactual_usd"]),
        draft_usd=_money(m.get("draft_usd")),
    )


def merge(groups: Groups, parts: Iterable[tuple[GroupKey, GroupSums]]) -> Groups:
    for key, sums in parts:
        groups.setdefault(key, GroupSums()).add(sums)
    return groups


def backfill(conn: Connection) -> None:
    """Migration step: create the rollup and fill it from the rows already in the ledger."""
    rollup_metadata.create_all(conn, checkfirst=True)
    with_draft = "draft_usd" in {c["name"] for c in inspect(conn).get_columns("requests")}
    groups = merge({}, map(from_raw_row, conn.execute(raw_groups_query(
        conn.dialect.name, None, None, with_draft))))
    params = [{**key_columns(k), **v.columns()} for k, v in sorted(groups.items())]
    if params:
        conn.execute(request_rollup.insert(), params)

