"""The Batch API's tables (migration 8), in the ledger database next to the request rows.

- `batch_files`: uploaded JSONL (purpose `batch`) and the output/error files a batch writes
  (purpose `batch_output`), content in the database with its sha256, so a PostgreSQL ledger
  serves every replica the same files. `owner` is the key that created it ("" anonymous).
- `batches`: one row per batch; status validating → in_progress → finalizing → completed,
  or failed (its key was revoked: `errors` says so) / expired / cancelling → cancelled
  (each through finalizing: batches/lifecycle.py). Times are UTC; the OpenAI object is built
  from this row and the line counts.
- `batch_lines`: one row per input line. `state`: pending → running → done | failed, or
  cancelled / expired / aborted (the key was revoked) when never run. A line is claimed
  (running, attempts + 1, claimed_by) in its own transaction before dispatch; its ledger
  row's id is `request_id`, fixed per line, so a retry after a crash overwrites that one
  row instead of adding a second: every line is billed exactly once. `(batch_id,
  custom_id)` is unique.

These tables hold the caller's prompts and answers (they are the caller's files, as with
OpenAI); the `requests` ledger rows still hold none.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from spillgate.ledger.schema import UTCDateTime

metadata = MetaData()

batch_files = Table(
    "batch_files",
    metadata,
    Column("file_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, default=""),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(256), nullable=False, default=""),
    Column("bytes", Integer(), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_batch_files_owner", "owner"),
)

batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, default=""),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("meta", JSON()),  # the client's metadata object (str -> str), or null
    Column("spill_allowed", Boolean(), nullable=False, default=False),
    Column("errors", JSON()),  # validation errors: [{"code","message","line"}], or null
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("in_progress_at", UTCDateTime()),
    Column("finalizing_at", UTCDateTime()),
    Column("completed_at", UTCDateTime()),
    Column("failed_at", UTCDateTime()),
    Column("expired_at", UTCDateTime()),
    Column("cancelling_at", UTCDateTime()),
    Column("cancelled_at", UTCDateTime()),
    Index("ix_batches_owner_created", "owner", "created_at"),
    Index("ix_batches_status", "status"),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line_no", Integer(), primary_key=True),  # 0-based position in the input file
    Column("custom_id", String(512), nullable=False),
    Column("request_id", String(128), nullable=False, unique=True),  # its ledger row
    Column("body", JSON(), nullable=False),
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer(), nullable=False, default=0),  # claims, preemptions included
    Column("failures", Integer(), nullable=False, default=0),  # retryable failures
    Column("claimed_by", String(128)),
    Column("claimed_at", UTCDateTime()),
    Column("status_code", Integer()),
    Column("response", JSON()),  # the answer's body (done) or the error body (failed)
    Column("finished_at", UTCDateTime()),
    UniqueConstraint("batch_id", "custom_id", name="uq_batch_lines_custom_id"),
    Index("ix_batch_lines_state", "batch_id", "state"),
)


def create_batch_tables(conn: Connection) -> None:
    """Migration 8: the three tables, created if missing (idempotent)."""
    metadata.create_all(conn, checkfirst=True)
