"""The OpenAI-compatible routes FastAPI serves. The hot ones (chat/completions, completions,
embeddings) are plain ASGI handlers: api/hot.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from spillgate.api.deps import client_of, node_of, request_id_of
from spillgate.web import JSONResponse

router = APIRouter(prefix="/v1")


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
