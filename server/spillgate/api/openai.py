"""The OpenAI-compatible routes. Each one: authenticate, read, hand to the service, answer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from spillgate import service
from spillgate.api.deps import client_of, node_of, read_body, request_id_of
from spillgate.api.disconnect import cancelled_on_disconnect, gone_is_499
from spillgate.life import RequestLife
from spillgate.types import Endpoint
from spillgate.web import JSONResponse

router = APIRouter(prefix="/v1")


async def _handle(request: Request, endpoint: Endpoint) -> Response:
    rid = request_id_of(request)
    node = node_of(request)
    # A refusal here (401, 413, a client gone mid-body) is counted like any other exit.
    async with RequestLife(node, rid), gone_is_499():
        client = await client_of(request)
        raw = await read_body(request, node.limits.max_body_bytes)
    async with cancelled_on_disconnect(request):  # a client gone: upstream cancelled, 499
        reply = await service.serve(node, endpoint, raw, request.headers, client, rid)
    headers = {**reply.headers, "x-request-id": rid}
    if isinstance(reply, service.StreamReply):
        headers["cache-control"] = "no-cache"
        return StreamingResponse(reply.chunks, media_type="text/event-stream", headers=headers)
    return JSONResponse(reply.body, headers=headers)


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _handle(request, "chat/completions")


@router.post("/completions")
async def completions(request: Request) -> Response:
    return await _handle(request, "completions")


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    return await _handle(request, "embeddings")


@router.get("/models")
async def models(request: Request) -> Response:
    rid = request_id_of(request)
    await client_of(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "spillgate"}
        for name in node_of(request).routes.names()
    ]
    return JSONResponse({"object": "list", "data": data},
                          headers={"x-request-id": rid, "x-spillgate-backend": "gateway"})
