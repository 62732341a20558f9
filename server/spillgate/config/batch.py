"""`batch:` the Batch API (/v1/files, /v1/batches) run on idle local capacity."""

from __future__ import annotations

from pydantic import Field

from spillgate.config.base import StrictModel


class BatchSettings(StrictModel):
    """The Batch API (/v1/files, /v1/batches): work run on idle local capacity."""

    enabled: bool = Field(True, description="Serve /v1/files and /v1/batches and run batches.")
    max_file_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Largest JSONL file POST /v1/files accepts."
    )
    max_lines: int = Field(50_000, ge=1, description="Most requests in one batch input file.")
    concurrency: int = Field(
        1, ge=1, le=64, description="Batch lines in flight at once (1-2 on a CPU engine)."
    )
    live_inflight_max: int = Field(
        0, ge=0, description="Batch lines start only while live (non-batch) requests in "
        "flight on the local engines are at most this many.",
    )
    poll_s: float = Field(
        0.02, gt=0, description="How often the scheduler looks at live load (backs off "
        "within this time)."
    )
    resume_after_s: float = Field(
        1.0, ge=0, description="Live load must have been below the limit this long before "
        "batch lines start again.",
    )
    preempt: bool = Field(
        True, description="Cancel running batch lines (retried later) when live load returns."
    )
    max_failures: int = Field(
        5, ge=1, description="Retryable failures (429, 5xx) before a line goes to the error file."
    )
    spill_margin_s: float = Field(
        3600.0, ge=0, description="A batch whose metadata allows spilling may send its "
        "non-sensitive lines to paid APIs this long before its window expires.",
    )
