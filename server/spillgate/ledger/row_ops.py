"""What a batch of request rows writes, whichever path writes it.

`Ledger.begin`/`finish` queue `RowOp`s; a batch collapses a request's begin and finish into
its final upsert (`split`), and each statement is executed once per set of columns
(`by_columns`). The statements are built once per dialect (`RowStatements`): the writer
thread's direct path (direct.py) compiles the same ones, so both paths write the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from spillgate.ledger.rows import RecordRow
from spillgate.ledger.schema import requests

Rows = dict[str, dict[str, Any]]  # request id -> its row's columns


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 4x the
# cost of this one on the event loop, which builds one per row; nothing changes it.
@dataclass(slots=True)
class RowOp:
    request_id: str
    row: dict[str, Any] | RecordRow  # a RecordRow is built into its dict by the batcher
    final: bool

    def columns(self) -> dict[str, Any]:
        return self.row if isinstance(self.row, dict) else self.row.columns()


class RowStatements:
    """The two statements of the hot write, built once per dialect."""

    def __init__(self, dialect_name: str) -> None:
        dialect = sqlite if dialect_name == "sqlite" else postgresql
        self.insert_open = dialect.insert(requests).on_conflict_do_nothing(
            index_elements=["request_id"])
        final = dialect.insert(requests)
        # feedback arrives after the answer (POST /v1/feedback): a late final row keeps it
        kept = ("request_id", "node_id", "started_at", "feedback", "feedback_at")
        self.upsert_final = final.on_conflict_do_update(
            index_elements=["request_id"],
            set_={c.name: final.excluded[c.name] for c in requests.c if c.name not in kept},
        )


def split(batch: Sequence[RowOp]) -> tuple[Rows, Rows]:
    """The batch's open rows and final rows, by request id: begin+finish of one request in
    the same batch collapse into its final row, and a later row of a request replaces an
    earlier one of the same kind."""
    opened: dict[str, RowOp] = {}
    final: dict[str, RowOp] = {}
    for op in batch:
        if op.final:
            final[op.request_id] = op
            opened.pop(op.request_id, None)
        elif op.request_id not in final:
            opened[op.request_id] = op
    # only the rows written are built (an open row collapsed into its final one is not)
    return ({rid: op.columns() for rid, op in opened.items()},
            {rid: op.columns() for rid, op in final.items()})  # fmt: skip


def by_columns(rows: Iterable[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """The rows grouped by their set of columns, one executemany each (rows built from
    RequestStart/RequestOutcome share one)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups.values()
