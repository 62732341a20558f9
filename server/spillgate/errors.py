"""Spillgate's exceptions, one tree; `api.errors` turns any of them into the OpenAI error body.

SpillgateError
├── ConfigError                  bad configuration: the process stops and names the field
└── ApiError                     answered to the client as {"error": {...}}
    ├── InvalidRequest            400 invalid_request_error
    │   └── ForbiddenField        400 a client tried to choose an upstream URL or key
    ├── AuthenticationFailed      401
    ├── PermissionDenied          403 (e.g. api tier pinned on sensitive data)
    ├── ModelNotFound             404 model_not_found
    ├── PayloadTooLarge           413
    ├── RateLimited               429 (engine queue full, key RPM/TPM, budget) + Retry-After
    ├── UpstreamError             502 a backend answered with something unusable
    ├── ServiceUnavailable        503 no backend able to serve (local restarting, sensitive…)
    ├── UpstreamTimeout           504
    ├── InternalError             500 a failure of the gateway itself (a bug): nothing leaks
    └── ClientClosed              499 the client went away first (recorded, never read)
"""

from __future__ import annotations

import traceback


class SpillgateError(Exception):
    """Base of every error Spillgate raises on purpose."""


class ConfigError(SpillgateError):
    """The configuration is invalid; the message names the field."""


class ApiError(SpillgateError):
    status: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.retry_after_s = retry_after_s
        # Response headers the refusal carries (e.g. x-spillgate-sensitivity on a 503).
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class ForbiddenField(InvalidRequest):
    default_code = "forbidden_field"


class AuthenticationFailed(ApiError):
    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    error_type = "permission_error"


class NotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class RateLimited(ApiError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(ApiError):
    status = 502
    error_type = "api_error"
    default_code = "upstream_error"


class ServiceUnavailable(ApiError):
    status = 503
    error_type = "service_unavailable"
    default_code = "no_backend_available"


class UpstreamTimeout(ApiError):
    status = 504
    error_type = "timeout_error"
    default_code = "upstream_timeout"


class InternalError(ApiError):
    default_code = "internal_error"


class ClientClosed(ApiError):
    status = 499  # nginx's "client closed request"
    error_type = "invalid_request_error"
    default_code = "client_closed_request"


def describe(exc: BaseException) -> str:
    """`Type at file:line` for a one-line log: enough to find a bug, with no exception text
    (it may quote the request) and no multi-kilobyte traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/spillgate/" in f.filename] or frames
    if not ours:
        return type(exc).__name__
    last = ours[-1]  # the deepest frame of our own code: where to look
    return f"{type(exc).__name__} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def error_for_status(status: int, message: str, retry_after_s: float | None = None) -> ApiError:
    """The ApiError matching an upstream's HTTP status (used to relay engine errors)."""
    by_status: dict[int, type[ApiError]] = {
        400: InvalidRequest,
        401: UpstreamError,  # our key to the upstream is wrong: not the client's fault
        403: UpstreamError,
        404: ModelNotFound,
        413: PayloadTooLarge,
        422: InvalidRequest,
        429: RateLimited,
        503: ServiceUnavailable,
        504: UpstreamTimeout,
    }
    cls = by_status.get(status, UpstreamError)
    return cls(message, retry_after_s=retry_after_s)
