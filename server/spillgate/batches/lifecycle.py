"""How a batch ends, and the OpenAI `batch` object.

Statuses: validating (the POST checks the file) → in_progress → finalizing (one
transaction writing the output files) → completed;
failed (the file did not validate: the POST answers 400 instead, nothing is stored);
in_progress past `expires_at` → its pending lines become `expired` → expired;
cancelling (POST …/cancel: pending lines become `cancelled`; the scheduler stops the ones
running, which become `cancelled` too; lines already done are kept) → cancelled.
A batch is finalized once no line is pending or running: its output file holds the lines
that succeeded, its error file every other line (a failed request with its status and error
body, or an `error` saying it never ran), both in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from spillgate.batches.files import OUTPUT_PURPOSE, file_row, insert_file
from spillgate.batches.jsonl import result_line
from spillgate.batches.store import ACTIVE, B, L, line_counts
from spillgate.ledger.batch_tables import batch_lines, batches
from spillgate.ledger.store import Ledger
from spillgate.types import JSON

_NEVER_RAN = {
    "expired": {"code": "batch_expired", "message": "This request could not be executed "
                "before the completion window expired."},
    "cancelled": {"code": "batch_cancelled", "message": "This request was not executed: "
                  "the batch was cancelled."},
}
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
            "failed": counts.get("failed", 0) + counts.get("expired", 0),
        },
        "metadata": row["meta"],
    }
    obj.update({name: _epoch(row[name]) for name in _TIMES})
    return obj


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class Advanced:
    ended: list[str]  # batches finalized now
    cancelling: frozenset[str]  # batches still cancelling: their running lines may stop
    active: int = 0  # batches still in progress or cancelling


async def advance(ledger: Ledger) -> Advanced:
    """Expire, cancel and finalize what is due."""
    now = ledger.now()
    ended, cancelling = [], set()
    async with ledger.transaction() as conn:
        active = [dict(r._mapping) for r in await conn.execute(
            select(B.batch_id, B.status, B.expires_at, B.owner).where(B.status.in_(ACTIVE)))]
        counts = await line_counts(conn, [b["batch_id"] for b in active])
        for batch in active:
            states = counts.get(batch["batch_id"], {})
            if batch["status"] == "cancelling":
                ends_as = "cancelled"
                cancelling.add(batch["batch_id"])
            elif now >= batch["expires_at"]:
                ends_as = "expired"
            else:
                ends_as = "completed"
            if ends_as != "completed" and states.get("pending"):
                await conn.execute(update(batch_lines).where(
                    L.batch_id == batch["batch_id"], L.state == "pending").values(
                    state=ends_as, finished_at=now))
                states[ends_as] = states.get(ends_as, 0) + states.pop("pending")
            if not states.get("pending") and not states.get("running"):
                await _finalize(conn, batch, ends_as, now)
                ended.append(batch["batch_id"])
                cancelling.discard(batch["batch_id"])
    return Advanced(ended, frozenset(cancelling), len(active) - len(ended))


async def _finalize(conn: AsyncConnection, batch: dict[str, Any], status: str,
                    now: datetime) -> None:
    batch_id = batch["batch_id"]
    output, errors = bytearray(), bytearray()
    rows = await conn.execute(select(
        L.custom_id, L.request_id, L.state, L.status_code, L.response)
        .where(L.batch_id == batch_id).order_by(L.line_no))
    for custom_id, request_id, state, status_code, response in rows:
        if state == "done":
            output += result_line(request_id, custom_id, status_code, response)
        elif state == "failed":
            errors += result_line(request_id, custom_id, status_code, response)
        else:
            errors += result_line(request_id, custom_id, None, None, _NEVER_RAN[state])
    ids = {}
    for kind, content in (("output", output), ("error", errors)):
        if content:
            row = file_row(batch["owner"], OUTPUT_PURPOSE, f"{batch_id}_{kind}.jsonl",
                           bytes(content), now)
            await insert_file(conn, row)
            ids[f"{kind}_file_id"] = row["file_id"]
    await conn.execute(update(batches).where(B.batch_id == batch_id).values(
        status=status, finalizing_at=now, **{f"{status}_at": now}, **ids))
