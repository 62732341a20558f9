"""Batches and their lines in the ledger database: create, read, list, cancel, claim, finish.

Every state change is one transaction whose WHERE clause names the state it leaves, so two
schedulers (two replicas on one PostgreSQL ledger) never both claim a line, and a finish
from a stale attempt (the line was recovered and claimed again) changes nothing.
The status transitions that end a batch live in lifecycle.py.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.batches.jsonl import ENDPOINTS, InputLine
from spillgate.errors import InvalidRequest, NotFound
from spillgate.ledger.batch_tables import batch_lines, batches
from spillgate.ledger.schema import api_keys
from spillgate.ledger.store import Ledger
from spillgate.types import JSON, Endpoint

SPILL_METADATA_KEY = "spillgate_spill"  # metadata {"spillgate_spill": "allow"}: may spill
ACTIVE = ("in_progress", "cancelling")
_WINDOW = re.compile(r"^(\d{1,6})([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
MAX_WINDOW_S = 7 * 86400
B, L, K = batches.c, batch_lines.c, api_keys.c


@dataclass(frozen=True, slots=True)
class ClaimedLine:
    """A line this process now runs (attempt `attempt`), with what the run needs."""

    batch_id: str
    line_no: int
    custom_id: str
    request_id: str
    body: JSON
    endpoint: Endpoint
    owner: str
    spill: bool  # the batch allows paid APIs and its window is about to close
    attempt: int
    failures: int


@dataclass(frozen=True, slots=True)
class NewBatch:
    owner: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None


def window_seconds(text: str) -> int:
    """`24h` (OpenAI's only value), or any `<n>h|m|s` up to 7 days."""
    match = _WINDOW.match(text)
    seconds = int(match[1]) * _UNIT_S[match[2]] if match else 0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidRequest("completion_window must be like 24h (at most 7 days)",
                             param="completion_window")
    return seconds


def line_request_id(batch_id: str, line_no: int) -> str:
    """The ledger row id of a line: the same on every attempt, so it is billed once."""
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line_no}"


class BatchStore:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # --- the API --------------------------------------------------------------------------
    async def create(self, new: NewBatch, lines: Sequence[InputLine]) -> dict[str, Any]:
        """Validate the lines against the endpoint, then store the batch in_progress."""
        if new.endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}",
                                 param="endpoint")
        for number, line in enumerate(lines, start=1):
            if line.url != new.endpoint:
                raise InvalidRequest(f"request {number} of the file is for another endpoint "
                                     "than the batch's", param="input_file_id",
                                     code="mismatched_endpoint")
        now = self.ledger.now()
        batch_id = f"batch_{secrets.token_hex(12)}"
        row = {
            "batch_id": batch_id, "owner": new.owner, "endpoint": new.endpoint,
            "input_file_id": new.input_file_id, "completion_window": new.completion_window,
            "status": "in_progress", "meta": new.metadata,
            "spill_allowed": (new.metadata or {}).get(SPILL_METADATA_KEY) == "allow",
            "created_at": now, "in_progress_at": now,
            "expires_at": now + timedelta(seconds=window_seconds(new.completion_window)),
        }
        async with self.ledger.transaction() as conn:
            await conn.execute(insert(batches).values(**row))
            await conn.execute(insert(batch_lines), [
                {"batch_id": batch_id, "line_no": n, "custom_id": line.custom_id,
                 "request_id": line_request_id(batch_id, n), "body": line.body,
                 "state": "pending"}
                for n, line in enumerate(lines)])
        return await self.get(new.owner, batch_id)

    async def get(self, owner: str, batch_id: str) -> dict[str, Any]:
        async with self.ledger.reading() as conn:
            row = (await conn.execute(select(batches).where(
                B.batch_id == batch_id, B.owner == owner))).first()
            if row is None:
                raise NotFound("no such batch for this key", param="batch_id",
                               code="batch_not_found")
            found = dict(row._mapping)
            found["counts"] = (await line_counts(conn, [batch_id])).get(batch_id, {})
        return found

    async def page(self, owner: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` batches of this owner, newest first, after the batch `after`."""
        query = select(batches).where(B.owner == owner)
        async with self.ledger.reading() as conn:
            if after:
                cursor = (await conn.execute(select(B.created_at, B.batch_id).where(
                    B.batch_id == after, B.owner == owner))).first()
                if cursor is None:
                    raise NotFound("no such batch for this key", param="after")
                query = query.where(tuple_(B.created_at, B.batch_id) < tuple(cursor))
            rows = [dict(r._mapping) for r in await conn.execute(
                query.order_by(B.created_at.desc(), B.batch_id.desc()).limit(limit))]
            counts = await line_counts(conn, [r["batch_id"] for r in rows])
        for row in rows:
            row["counts"] = counts.get(row["batch_id"], {})
        return rows

    async def cancel(self, owner: str, batch_id: str) -> dict[str, Any]:
        """Stop new lines (finished ones are kept); the scheduler ends it as `cancelled`."""
        await self.get(owner, batch_id)  # 404 for another key's batch
        async with self.ledger.transaction() as conn:
            await conn.execute(update(batches).where(
                B.batch_id == batch_id, B.status.in_(("validating", "in_progress")))
                .values(status="cancelling", cancelling_at=self.ledger.now()))
        return await self.get(owner, batch_id)

    # --- the scheduler --------------------------------------------------------------------
    async def claim(self, limit: int, node_id: str, *, spill_from: datetime,
                    spill_only: bool = False) -> list[ClaimedLine]:
        """Mark up to `limit` pending lines running for this node, oldest batch first.
        `spill_only`: only lines of batches that may spill now (expiring before
        `spill_from`)."""
        spillable = and_(B.spill_allowed.is_(True), B.expires_at <= spill_from)
        query = (select(L.batch_id, L.line_no, L.custom_id, L.request_id, L.body, L.attempts,
                        L.failures, B.endpoint, B.owner, spillable.label("spill"))
                 .join(batches, B.batch_id == L.batch_id)
                 .outerjoin(api_keys, K.key_id == B.owner)
                 # a revoked key's batches start no new line (lifecycle.advance ends them)
                 .where(B.status == "in_progress", L.state == "pending",
                        K.revoked_at.is_(None)))
        if spill_only:
            query = query.where(spillable)
        claimed = []
        async with self.ledger.transaction() as conn:
            # PostgreSQL: replicas claiming at once each skip the lines another one holds
            # (SQLite has one writer at a time and no FOR UPDATE).
            rows = (await conn.execute(
                query.order_by(B.created_at, L.batch_id, L.line_no).limit(limit)
                .with_for_update(skip_locked=True, of=batch_lines))).all()
            for r in rows:
                took = await conn.execute(update(batch_lines).where(
                    L.batch_id == r.batch_id, L.line_no == r.line_no, L.state == "pending")
                    .values(state="running", attempts=L.attempts + 1, claimed_by=node_id,
                            claimed_at=self.ledger.now()))
                if took.rowcount == 1:
                    claimed.append(ClaimedLine(
                        r.batch_id, r.line_no, r.custom_id, r.request_id, dict(r.body),
                        ENDPOINTS[r.endpoint], r.owner, bool(r.spill), r.attempts + 1,
                        r.failures))
        return claimed

    async def finish(self, line: ClaimedLine, state: str, status_code: int | None,
                     response: JSON | None) -> bool:
        """The line's result (state done or failed); False when this attempt was stale."""
        async with self.ledger.transaction() as conn:
            done = await conn.execute(update(batch_lines).where(*_this_attempt(line)).values(
                state=state, status_code=status_code, response=response,
                finished_at=self.ledger.now()))
        return done.rowcount == 1

    async def release(self, line: ClaimedLine, *, failed: bool) -> None:
        """Back to pending (preempted, or a retryable failure counted in `failures`)."""
        async with self.ledger.transaction() as conn:
            await conn.execute(update(batch_lines).where(*_this_attempt(line)).values(
                state="pending", claimed_by=None,
                failures=L.failures + (1 if failed else 0)))

    async def recover(self, node_id: str, grace_s: float) -> int:
        """Lines left running by this node's previous process (or by any node longer than
        `grace_s`) go back to pending: retried, under the same ledger row."""
        cutoff = self.ledger.now() - timedelta(seconds=grace_s)
        async with self.ledger.transaction() as conn:
            result = await conn.execute(update(batch_lines).where(
                L.state == "running", or_(L.claimed_by == node_id, L.claimed_at < cutoff))
                .values(state="pending", claimed_by=None))
        return int(result.rowcount or 0)


async def dead_owners(conn: AsyncConnection, owners: set[str]) -> set[str]:
    """The owners among `owners` whose key was revoked (keys.py refuses it at the door);
    "" is the anonymous owner of a node without keys."""
    named = sorted(owners - {""})
    if not named:
        return set()
    return set((await conn.execute(select(K.key_id).where(
        K.key_id.in_(named), K.revoked_at.is_not(None)))).scalars())


def _this_attempt(line: ClaimedLine) -> tuple[Any, ...]:
    return (L.batch_id == line.batch_id, L.line_no == line.line_no, L.state == "running",
            L.attempts == line.attempt)


async def line_counts(conn: AsyncConnection,
                      batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """{batch_id: {line state: count}} for the given batches."""
    if not batch_ids:
        return {}
    rows = await conn.execute(select(L.batch_id, L.state, func.count()).where(
        L.batch_id.in_(list(batch_ids))).group_by(L.batch_id, L.state))
    counts: dict[str, dict[str, int]] = {}
    for batch_id, state, count in rows:
        counts.setdefault(batch_id, {})[state] = int(count)
    return counts
