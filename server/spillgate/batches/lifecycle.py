"""How a batch ends, and the OpenAI `batch` object.

Statuses: validating (the POST checks the file) → in_progress → finalizing → completed;
failed (the file did not validate: the POST answers 400 instead, nothing is stored; or the
key that created the batch was revoked: its pending lines are stopped, `errors` says why);
in_progress past `expires_at` → its pending lines become `expired` → expired;
cancelling (POST …/cancel: pending lines become `cancelled`; the scheduler stops the ones
running, which become `cancelled` too; lines already done are kept) → cancelled.

Ending takes two transactions, so that clients see `finalizing` (OpenAI's lifecycle) while
the files are built and a crash in between is finished after a restart:
1. once no line is pending or running, the batch becomes `finalizing` (`finalizing_at`);
2. on the next round the output and error files are written and the batch takes its end
   status, in one transaction that only a batch still `finalizing` passes: a second attempt
   (another replica, a restart) writes nothing, so every line is in the files exactly once.
The output file holds the lines that succeeded, the error file every other line (a failed
request with its status and error body, or an `error` saying it never ran), in input order.
The end status follows from the lines: cancelled if the client asked, else failed if lines
were stopped because the key was revoked, else expired if lines ran out of time, else
completed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.batches.files import OUTPUT_PURPOSE, file_row, insert_file
from spillgate.batches.jsonl import result_line
from spillgate.batches.store import ACTIVE, B, L, dead_owners, line_counts
from spillgate.ledger.batch_tables import batch_lines, batches
from spillgate.ledger.store import Ledger
from spillgate.types import JSON

FINALIZING = "finalizing"
_NEVER_RAN = {
    "expired": {"code": "batch_expired", "message": "This request could not be executed "
                "before the completion window expired."},
    "cancelled": {"code": "batch_cancelled", "message": "This request was not executed: "
                  "the batch was cancelled."},
    "aborted": {"code": "batch_failed", "message": "This request was not executed: the "
                "API key that created the batch was revoked."},
}
KEY_REVOKED = {"code": "key_revoked", "param": None, "line": None,
               "message": "The API key that created this batch was revoked: no new "
                          "requests were started. Requests that finished before are in the "
                          "output file and stay billed once."}
_TIMES = ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
          "expired_at", "cancelling_at", "cancelled_at")


def batch_object(row: dict[str, Any]) -> JSON:
    counts: dict[str, int] = row.get("counts", {})
    errors = row["errors"]
    obj: JSON = {
        "id": row["batch_id"], "object": "batch", "endpoint": row["endpoint"],
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": row["input_file_id"], "completion_window": row["completion_window"],
        "status": row["status"], "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"], "created_at": _epoch(row["created_at"]),
        "request_counts": {
            "total": sum(counts.values()),
            "completed": counts.get("done", 0),
            "failed": sum(counts.get(s, 0) for s in ("failed", "expired", "aborted")),
        },
        "metadata": row["meta"],
    }
    obj.update({name: _epoch(row[name]) for name in _TIMES})
    return obj


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def end_status(cancelled: bool, states: Counter[str]) -> str:
    """The status a finalizing batch ends with (module docstring)."""
    if cancelled:
        return "cancelled"
    if states["aborted"]:
        return "failed"
    return "expired" if states["expired"] else "completed"


@dataclass(frozen=True, slots=True)
class Advanced:
    ended: list[str]  # batches that took their end status now
    stopping: frozenset[str]  # cancelled or key revoked: their running lines should stop
    active: int = 0  # batches still in progress, cancelling or finalizing
    finalizing: list[str] = field(default_factory=list)  # became finalizing now


async def advance(ledger: Ledger) -> Advanced:
    """Stop what is cancelled, expired or orphaned; start finalizing what has no line left
    to run; finish finalizing what began on an earlier round (or before a crash)."""
    now = ledger.now()
    finalizing, stopping = [], set()
    async with ledger.transaction() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(
            select(B.batch_id, B.status, B.expires_at, B.owner)
            .where(B.status.in_((*ACTIVE, FINALIZING))))]
        due = [b["batch_id"] for b in rows if b["status"] == FINALIZING]
        running = [b for b in rows if b["status"] != FINALIZING]
        dead = await dead_owners(conn, {b["owner"] for b in running})
        counts = await line_counts(conn, [b["batch_id"] for b in running])
        for batch in running:
            batch_id, states = batch["batch_id"], counts.get(batch["batch_id"], {})
            stop_as = _stop_as(batch, dead, now)
            if stop_as in ("cancelled", "aborted"):
                stopping.add(batch_id)
            if stop_as and states.get("pending"):
                await conn.execute(update(batch_lines).where(
                    L.batch_id == batch_id, L.state == "pending").values(
                    state=stop_as, finished_at=now))
                states.pop("pending")
            if not states.get("pending") and not states.get("running"):
                await conn.execute(update(batches).where(
                    B.batch_id == batch_id, B.status == batch["status"])
                    .values(status=FINALIZING, finalizing_at=now))
                finalizing.append(batch_id)
                stopping.discard(batch_id)
    ended = [batch_id for batch_id in due if await finalize(ledger, batch_id)]
    return Advanced(ended, frozenset(stopping), len(rows) - len(ended), finalizing)


def _stop_as(batch: dict[str, Any], dead: set[str], now: datetime) -> str | None:
    """What the batch's pending lines become now, or None: they may still run."""
    if batch["status"] == "cancelling":
        return "cancelled"
    if batch["owner"] in dead:
        return "aborted"
    return "expired" if now >= batch["expires_at"] else None


class _AlreadyFinal(Exception):
    """Another attempt finished this batch first: roll back the files written here."""


async def finalize(ledger: Ledger, batch_id: str) -> bool:
    """Write the files and the end status of a `finalizing` batch; False if another attempt
    did (nothing is written twice)."""
    try:
        async with ledger.transaction() as conn:
            await _finalize(conn, batch_id, ledger.now())
    except _AlreadyFinal:
        return False
    return True


async def _finalize(conn: AsyncConnection, batch_id: str, now: datetime) -> None:
    batch = (await conn.execute(select(B.owner, B.cancelling_at).where(
        B.batch_id == batch_id))).one()
    output, errors, states = bytearray(), bytearray(), Counter[str]()
    rows = await conn.execute(select(
        L.custom_id, L.request_id, L.state, L.status_code, L.response)
        .where(L.batch_id == batch_id).order_by(L.line_no))
    for custom_id, request_id, state, status_code, response in rows:
        states[state] += 1
        if state == "done":
            output += result_line(request_id, custom_id, status_code, response)
        elif state == "failed":
            errors += result_line(request_id, custom_id, status_code, response)
        else:
            errors += result_line(request_id, custom_id, None, None, _NEVER_RAN[state])
    status = end_status(batch.cancelling_at is not None, states)
    ended = await conn.execute(update(batches).where(
        B.batch_id == batch_id, B.status == FINALIZING).values(
        status=status, **{f"{status}_at": now},
        **({"errors": [KEY_REVOKED]} if status == "failed" else {})))
    if ended.rowcount != 1:
        raise _AlreadyFinal(batch_id)
    ids = {}
    for kind, content in (("output", output), ("error", errors)):
        if content:
            row = file_row(batch.owner, OUTPUT_PURPOSE, f"{batch_id}_{kind}.jsonl",
                           bytes(content), now)
            await insert_file(conn, row)
            ids[f"{kind}_file_id"] = row["file_id"]
    if ids:
        await conn.execute(update(batches).where(B.batch_id == batch_id).values(**ids))
