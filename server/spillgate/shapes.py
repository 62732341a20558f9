"""The shapes of the request fields the backends read or translate, checked at admission.

`protocol.admit` validates what the gateway itself uses (model, limits, stream). The
adapters read more: the Anthropic translation walks `tools`, `tool_choice`, `stop`,
assistant `tool_calls` and content parts; an OpenAI-compatible engine parses them too. A
malformed value there (`tools: ["x"]`, `stop: 5`, `tool_calls: "zzz"`) must be the client's
400 naming the field, not a crash deep in a translator. Every model here allows extra fields:
only the types the adapters rely on are checked, nothing is reshaped (the body forwarded is
still the client's own dict).

Before any of that, a depth limit: JSON nested deeper than MAX_DEPTH is refused with 400, so no
later walk over the body (forbidden fields, sensitivity scan, translation, serialization)
recurses without bound.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from spillgate.errors import InvalidRequest
from spillgate.types import JSON, Endpoint

MAX_DEPTH = 64  # objects and arrays nested in a request body (tool schemas need ~10)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionDef(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Open):
    type: str
    function: FunctionDef | None = None

    @model_validator(mode="after")
    def _function_tools_define_one(self) -> Tool:
        if self.type == "function" and self.function is None:
            raise ValueError("a tool of type `function` needs a `function` object")
        return self


class NamedFunction(_Open):
    name: str = Field(min_length=1)


class NamedToolChoice(_Open):
    type: str
    function: NamedFunction | None = None

    @model_validator(mode="after")
    def _function_choice_names_one(self) -> NamedToolChoice:
        if self.type == "function" and self.function is None:
            raise ValueError("tool_choice of type `function` needs `function.name`")
        return self


class ImageURL(_Open):
    url: str


class ContentPart(_Open):
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None

    @model_validator(mode="after")
    def _part_has_its_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a `text` part needs `text` (a string)")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an `image_url` part needs `image_url.url`")
        return self


class CalledFunction(_Open):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(_Open):
    id: str
    type: str = "function"
    function: CalledFunction


class MessageShape(_Open):
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


Stop = str | list[str] | None


class ChatShapes(_Open):
    messages: list[MessageShape] | None = None  # presence and roles: protocol.ChatRequest
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    stop: Stop = None
    user: str | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None


class CompletionShapes(_Open):
    stop: Stop = None
    user: str | None = None
    seed: int | None = None
    echo: StrictBool | None = None
    suffix: str | None = None


_SHAPES: dict[Endpoint, type[_Open]] = {
    "chat/completions": ChatShapes,
    "completions": CompletionShapes,
}


def check(endpoint: Endpoint, body: JSON) -> None:
    """Refuse, with 400 naming the field, a body nested too deep or a translated field of
    the wrong shape."""
    check_depth(body)
    model = _SHAPES.get(endpoint)
    if model is None:
        return
    try:
        model.model_validate(body)
    except ValidationError as exc:
        param, message = _most_specific(exc.errors(), body)
        raise InvalidRequest(f"invalid `{param}`: {message}", param=param) from None


def check_depth(body: JSON, limit: int = MAX_DEPTH) -> None:
    """Level by level, no recursion of our own; stops at the limit. The field is looked up
    only once the body is known to be too deep."""
    if _depth_exceeds(body, limit):
        field = next((str(k) for k, v in body.items() if _depth_exceeds(v, limit - 1)), "")
        raise InvalidRequest(
            f"`{field}` is nested more than {limit} levels deep", param=field or None,
            code="nesting_too_deep",
        )


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` holds more than `limit` levels of objects and arrays."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        if not level:
            return False
        below: list[Any] = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below
    return bool(level)


def _most_specific(errors: list[ErrorDetails], body: JSON) -> tuple[str, str]:
    """The error deepest in the body: a union reports one error per alternative, and the
    deepest one points at the value actually wrong."""
    best = max(errors, key=lambda e: len(_path(e, body)))
    return ".".join(str(p) for p in _path(best, body)), best["msg"]


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _path(error: ErrorDetails, body: JSON) -> list[str | int]:
    """The error's location as a path into the body, without pydantic's union-member tags
    (`str`, `list[ContentPart]`…); a missing field keeps its own name."""
    path: list[str | int] = []
    node: Any = body
    for part in error["loc"]:
        if _has(node, part):
            node = node[part]
            path.append(part)
    if error["type"] == "missing" and error["loc"]:
        path.append(error["loc"][-1])
    return path
