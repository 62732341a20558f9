"""POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches, POST /v1/batches/{id}/cancel.

Thin: parse, call the batch store, answer OpenAI's `batch` object. A batch belongs to the key
that created it; any other key gets 404.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, ValidationError

from spillgate.api.admin import require_admin
from spillgate.api.admin_reports import report_window
from spillgate.api.deps import read_body
from spillgate.api.files import batch_service, owner_of
from spillgate.batches.jsonl import parse_input
from spillgate.batches.lifecycle import batch_object
from spillgate.batches.store import NewBatch
from spillgate.errors import InvalidRequest
from spillgate.reports.batches import batch_report
from spillgate.web import JSONResponse

router = APIRouter(prefix="/v1")
admin_router = APIRouter(dependencies=[Depends(require_admin)])
MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 100


class BatchCreate(BaseModel):
    """POST /v1/batches body (OpenAI's)."""

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str = Field(max_length=64)
    completion_window: str = Field("24h", max_length=16)
    metadata: dict[str, str] | None = Field(None, max_length=16)


def _parse(raw: bytes) -> BatchCreate:
    try:
        return BatchCreate.model_validate_json(raw or b"{}")
    except ValidationError as exc:  # names the field, never echoes the input
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"invalid body: {field or 'body'}: {first['msg']}",
                             param=field) from None


@router.post("/batches")
async def create_batch(request: Request) -> Response:
    owner = await owner_of(request)
    body = _parse(await read_body(request, MAX_BODY_BYTES))
    batches = batch_service(request)
    content = await batches.files.input_content(owner, body.input_file_id)
    lines = parse_input(content, batches.config.max_lines)
    row = await batches.store.create(NewBatch(
        owner, body.input_file_id, body.endpoint, body.completion_window, body.metadata),
        lines)
    batches.scheduler.wake()
    return JSONResponse(batch_object(row))


@router.get("/batches/{batch_id}")
async def get_batch(request: Request, batch_id: str) -> Response:
    owner = await owner_of(request)
    return JSONResponse(batch_object(await batch_service(request).store.get(owner, batch_id)))


@router.get("/batches")
async def list_batches(request: Request, after: str | None = None, limit: int = 20) -> Response:
    owner = await owner_of(request)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    rows = await batch_service(request).store.page(owner, after, limit + 1)
    data = [batch_object(r) for r in rows[:limit]]
    return JSONResponse({
        "object": "list", "data": data, "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    })


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    owner = await owner_of(request)
    batches = batch_service(request)
    row = await batches.store.cancel(owner, batch_id)
    batches.scheduler.wake()
    return JSONResponse(batch_object(row))


@admin_router.get("/admin/report/batches")
async def batch_cost_report(request: Request, since: str = "7d",
                            until: str | None = None) -> Response:
    """Batch tokens, their amortized cost, utilization added, idle cost absorbed (JSON)."""
    start, end, _ = report_window(since, until, None, datetime.now(UTC))
    ledger = batch_service(request).store.ledger
    return JSONResponse(await batch_report(ledger, start, end))
