"""HTTP pieces shared by the gateway and the engine process (neither imports the other's api/).

One handler turns every ApiError (and FastAPI's own validation errors) into the OpenAI
error body, with the request id and Retry-After headers; JSON responses go through orjson."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from spillgate.errors import ApiError, InternalError, InvalidRequest, describe

log = logging.getLogger(__name__)
REQUEST_ID = "x-request-id"


class JSONResponse(Response):
    """JSON serialized with orjson (FastAPI deprecated its own ORJSONResponse)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_parts(exc: ApiError, request_id: str | None) -> tuple[int, dict[str, str], bytes]:
    """The OpenAI error answer for `exc`: status, headers (the request id, Retry-After) and
    body, for a server that writes its own responses (api/hot_protocol.py)."""
    headers = dict(exc.headers)
    if request_id:
        headers[REQUEST_ID] = request_id
    if exc.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after_s)))
    return exc.status, headers, orjson.dumps(exc.body())


def error_response(exc: ApiError, request: Request | str | None) -> Response:
    """The OpenAI error body; `request` (or its id) names the request in x-request-id."""
    request_id = request if not isinstance(request, Request) else getattr(
        request.state, "request_id", None)
    status, headers, body = error_parts(exc, request_id)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return error_response(exc, request)


async def _validation_error(request: Request, exc: Exception) -> Response:
    # Field and reason only: str(exc) would echo the input and the endpoint's source file.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {"loc": (), "msg": "malformed"}
    field = ".".join(str(p) for p in first["loc"]) or None
    return error_response(InvalidRequest(f"invalid request: {field or 'request'}: "
                                         f"{first['msg']}", param=field), request)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = str(getattr(exc, "detail", "error"))
    error = ApiError(detail, code="not_found" if status == 404 else None)
    error.status = status
    error.error_type = "invalid_request_error" if status < 500 else "server_error"
    return error_response(error, request)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # One line, type and place only: exception text could echo request content.
    log.error("unhandled error on request %s: %s",
              getattr(request.state, "request_id", "?"), describe(exc))
    return error_response(InternalError("internal error"), request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
