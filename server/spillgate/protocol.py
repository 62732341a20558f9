"""OpenAI request admission: parse, validate, refuse client-chosen upstreams, clamp limits.

Validation uses pydantic models that allow extra fields (tools, response_format and any
engine-specific extras pass through untouched); the body forwarded upstream is the client's own
dict after clamping, so nothing the client sent is silently reshaped.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spillgate import shapes
from spillgate.errors import ForbiddenField, InvalidRequest
from spillgate.settings import ServerSettings
from spillgate.types import JSON, Endpoint

# A client may never pick where its request goes or with whose key.
FORBIDDEN_FIELDS = frozenset(
    {"api_base", "base_url", "api_key", "api_version", "organization", "azure_endpoint",
     "custom_llm_provider", "extra_headers", "aws_access_key_id", "aws_secret_access_key"}
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class _Common(_Open):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    top_logprobs: int | None = Field(None, ge=0)  # clamped like chat's; a string was a 500


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    # Embeddings are never streamed; checked here because the path reads both fields.
    stream: Literal[False] = False
    stream_options: StreamOptions | None = None


_MODELS: dict[Endpoint, type[_Open]] = {
    "chat/completions": ChatRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}


class _AdmitMessage(shapes.MessageShape, Message):
    content: str | list[shapes.ContentPart] | None = None  # type: ignore[assignment]


class _ChatAdmit(shapes.ChatShapes, ChatRequest):
    messages: list[_AdmitMessage] = Field(min_length=1)  # type: ignore[assignment]


class _CompletionAdmit(shapes.CompletionShapes, CompletionRequest):
    pass


# Both checks in one pydantic pass: a body these accept passes shapes.check and `validate`
# (every field carries both constraints). A body they refuse goes through the two checks in
# their order, so its error (which field, which message) is theirs, unchanged.
_ADMIT: dict[Endpoint, type[_Open]] = {
    "chat/completions": _ChatAdmit,
    "completions": _CompletionAdmit,
    "embeddings": EmbeddingRequest,
}


def parse_body(raw: bytes) -> JSON:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _scan(body: JSON, limit: int = shapes.MAX_DEPTH) -> tuple[bool, bool]:
    """One walk for two questions: is the body nested deeper than `limit` (shapes.check_depth
    says where), and does a forbidden field appear anywhere (refuse_forbidden_fields says
    which)? Level by level, like check_depth, so it stops at the limit."""
    level: list[Any] = [body]
    forbidden = False
    for _ in range(limit):
        if not level:
            return False, forbidden
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                forbidden = forbidden or not FORBIDDEN_FIELDS.isdisjoint(node)
                node = node.values()
            for child in node:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below
    return bool(level), forbidden


def refuse_forbidden_fields(value: Any, path: str = "") -> None:
    """Walk the whole body: an upstream URL or key anywhere is refused, not ignored."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in FORBIDDEN_FIELDS:
                raise ForbiddenField(
                    f"`{where}` is not allowed: upstream URLs and keys are operator "
                    "configuration, never chosen by a client",
                    param=where,
                )
            refuse_forbidden_fields(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_forbidden_fields(item, f"{path}[{index}]")


def validate(endpoint: Endpoint, body: JSON) -> _Open:
    try:
        return _MODELS[endpoint].model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"invalid `{param}`: {first['msg']}", param=param) from None


def clamp_limits(endpoint: Endpoint, body: JSON, limits: ServerSettings) -> None:
    """Insert max_tokens when absent and clamp max_tokens, n and top_logprobs in place."""
    if endpoint == "embeddings":
        return
    for field in ("max_tokens", "max_completion_tokens"):
        if body.get(field) is not None:
            body[field] = min(int(body[field]), limits.max_tokens_ceiling)
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = min(limits.default_max_tokens, limits.max_tokens_ceiling)
    if body.get("n") is not None:
        body["n"] = min(int(body["n"]), limits.max_n)
    if body.get("top_logprobs") is not None:
        body["top_logprobs"] = min(int(body["top_logprobs"]), limits.max_top_logprobs)


def max_output_tokens(body: JSON) -> int:
    """Worst-case completion tokens of an admitted request (all choices)."""
    per_choice = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return int(per_choice) * int(body.get("n") or 1)


def admit(endpoint: Endpoint, raw: bytes, limits: ServerSettings) -> tuple[JSON, _Open]:
    body = parse_body(raw)
    too_deep, forbidden = _scan(body)
    if too_deep:
        shapes.check_depth(body)  # first: every later walk over the body is bounded
    try:
        parsed = _ADMIT[endpoint].model_validate(body)
    except ValidationError:
        parsed = None  # the two checks below say what is wrong, as they always have
    if parsed is None:
        shapes.check(endpoint, body)  # the fields adapters translate
    if forbidden:
        refuse_forbidden_fields(body)  # names the field, as it always has
    if parsed is None:
        parsed = validate(endpoint, body)
    clamp_limits(endpoint, body, limits)
    return body, parsed
