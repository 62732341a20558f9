"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from spillgate.api.deps import bearer_matches, node_of
from spillgate.errors import AuthenticationFailed
from spillgate.settings import Settings
from spillgate.web import JSONResponse

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    """Alive: the process answers. Says nothing about backends (that is /readyz)."""
    return JSONResponse({"status": "ok"}, headers={"x-spillgate-backend": "gateway"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when at least one backend can serve: a ready local engine or a paid provider."""
    node = node_of(request)
    local = {name: cap.ready for name, cap in node.capacity().items()}
    paid = sorted({b for b, be in node.upstreams.backends.items() if be.tier == "api"})
    ready = any(local.values()) or bool(paid)
    body = {"status": "ready" if ready else "not_ready", "local": local, "providers": paid}
    return JSONResponse(body, status_code=200 if ready else 503,
                          headers={"x-spillgate-backend": "gateway"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics; behind a bearer key when server.metrics_key_env names one."""
    settings: Settings = request.app.state.settings
    expected = settings.metrics_key()
    if expected and not bearer_matches(request.headers.get("authorization"), expected):
        raise AuthenticationFailed("metrics key required: Authorization: Bearer <metrics key>")
    page = node_of(request).metrics.render(key_ids=settings.server.metrics_key_ids)
    return Response(page, media_type=CONTENT_TYPE_LATEST,
                    headers={"x-spillgate-backend": "gateway"})
