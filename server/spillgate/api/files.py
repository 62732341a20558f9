"""POST /v1/files (purpose `batch`, JSONL), GET /v1/files/{id}, GET /v1/files/{id}/content.

A file belongs to the key that uploaded it (or wrote it: a batch's output); any other key
gets 404. An input file is checked line by line on upload (batches/jsonl.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile
from starlette.types import Message

from spillgate.api.deps import client_of, request_id_of
from spillgate.batches import BatchService
from spillgate.batches.files import INPUT_PURPOSE
from spillgate.batches.jsonl import parse_input
from spillgate.errors import InvalidRequest, PayloadTooLarge
from spillgate.web import JSONResponse

router = APIRouter(prefix="/v1")
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small fields


def batch_service(request: Request) -> BatchService:
    service: BatchService = request.app.state.batches
    return service


async def owner_of(request: Request) -> str:
    """The caller's key id (files and batches are scoped by it); "" when anonymous."""
    return (await client_of(request)).key_id or ""


@router.post("/files")
async def create_file(request: Request) -> Response:
    owner = await owner_of(request)
    batches = batch_service(request)
    cap = batches.config.max_file_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"file exceeds the {cap}-byte limit")
    async with capped(request, cap + FORM_OVERHEAD_BYTES).form(max_files=1,
                                                                max_fields=4) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != INPUT_PURPOSE:
            raise InvalidRequest("purpose must be `batch`", param="purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("a `file` part is required", param="file")
        content = await upload.read(cap + 1)
        filename = (upload.filename or "input.jsonl")[:256]
    if len(content) > cap:
        raise PayloadTooLarge(f"file exceeds the {cap}-byte limit")
    parse_input(content, batches.config.max_lines)
    created = await batches.files.create(owner, INPUT_PURPOSE, filename, content)
    return JSONResponse(created, headers={"x-request-id": request_id_of(request)})


def capped(request: Request, limit: int) -> Request:
    """The request whose body is counted as it arrives: 413 as soon as it passes `limit`
    bytes, so a body without a content-length (chunked) is refused while it streams, not
    after the form parser has spooled all of it."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"file exceeds the {limit - FORM_OVERHEAD_BYTES}-byte "
                                      "limit")
        return message

    return Request(request.scope, receive)


@router.get("/files/{file_id}")
async def get_file(request: Request, file_id: str) -> Response:
    owner = await owner_of(request)
    return JSONResponse(await batch_service(request).files.describe(owner, file_id))


@router.get("/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    owner = await owner_of(request)
    content = await batch_service(request).files.content(owner, file_id)
    return Response(content, media_type="application/jsonl")
