"""The request bodies this engine accepts, validated into plain values or a 400.

Bodies are parsed here rather than by FastAPI so every failure is an OpenAI-shaped 400 naming
the field (FastAPI would answer 422 in its own shape). Unknown fields are allowed and ignored,
as OpenAI-compatible servers do; fields that would change the answer's meaning but that this
engine cannot honour (n > 1, echo, suffix, best_of > 1, and tools unless the model's chat
template takes them) are refused with a clear message instead of being silently dropped, and
declared on /health so the gateway never sends them here (UNSUPPORTED). Logprobs are served
(chat `logprobs` + `top_logprobs` ≤ 20, completions `logprobs` ≤ 5; see logprobs.py).

JSON modes are served through llama.cpp grammars: `json_object` constrains the output to
llama.cpp's JSON grammar, `json_schema` to the grammar llama-cpp-python's `LlamaGrammar`
derives from the schema. That converter bounds strings (maxLength), enums, required and
additional properties, but not numeric ranges (minimum/maximum): those are not enforced.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, TypeVar

import orjson
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spillgate.engines.llamacpp.logprobs import MAX_CHAT_TOP, MAX_COMPLETION_TOP
from spillgate.engines.llamacpp.model import SamplingParams
from spillgate.engines.llamacpp.tools import call_grammar
from spillgate.errors import InvalidRequest

MAX_STOPS = 16
# Request features (routing.features names) this engine never serves; `tools` is added when
# the model's chat template takes no tools.
UNSUPPORTED = frozenset({"n"})


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool = False


class _Generation(_Open):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    user: str | None = None
    # vLLM's field: lower is admitted first (ties in arrival order). The gateway sends -1 for
    # sensitive requests, which cannot spill and so must not wait behind spillable ones.
    priority: int = 0

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            seed=self.seed,
        )

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise InvalidRequest(f"at most {MAX_STOPS} stop sequences", param="stop")
        return tuple(s for s in stops if s)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        if (self.n or 1) > 1:
            raise InvalidRequest("n > 1 is not supported by this engine", param="n",
                                 code="unsupported_parameter")


class ContentPart(_Open):
    type: str
    text: str | None = None


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequest(f"content parts of type `{part.type}` are not supported "
                                     "by this text-only engine", param="messages",
                                     code="unsupported_content")
            parts.append(part.text)
        return "".join(parts)


class ChatBody(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_CHAT_TOP)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs and not self.logprobs:  # OpenAI refuses this too
            raise InvalidRequest("`top_logprobs` needs `logprobs` set to true",
                                 param="top_logprobs")

    def logprobs_top(self) -> int | None:
        """How many alternatives per token; None when no logprobs are asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def uses_tools(self) -> bool:
        """Tools are offered to the model (given, and tool_choice is not `none`)."""
        return bool(self.tools) and self.tool_choice != "none"

    def grammar(self) -> str | None:
        """GBNF for `response_format` or a demanded tool call (None for free text); a bad
        format is a 400."""
        kind = (self.response_format or {}).get("type", "text")
        forced = call_grammar(self.tools or [], self.tool_choice) if self.uses_tools() else None
        if forced is not None and kind != "text":
            raise InvalidRequest("a required tool call and a JSON response_format exclude "
                                 "each other", param="tool_choice")
        if forced is not None:
            return forced
        if kind == "text":
            return None
        if kind == "json_object":
            return JSON_GBNF
        if kind != "json_schema":
            raise InvalidRequest(f"unknown response_format type `{kind}` (use text, "
                                 "json_object or json_schema)", param="response_format.type")
        spec = (self.response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON object",
                                 param="response_format.json_schema")
        try:
            return LlamaGrammar.from_json_schema(orjson.dumps(schema).decode(),
                                                 verbose=False)._grammar
        except Exception as exc:  # the converter raises bare Exceptions on unsupported schemas
            raise InvalidRequest(f"this JSON schema cannot be turned into a grammar: {exc}",
                                 param="response_format.json_schema") from None

    def sampling(self) -> SamplingParams:
        return replace(super().sampling(), grammar=self.grammar())

    def template_messages(self) -> list[dict[str, Any]]:
        # `developer` is the newer name of `system`; templates only know the latter. Tool
        # turns keep their calls and ids for templates that render them.
        out: list[dict[str, Any]] = []
        for m in self.messages:
            message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role,
                                       "content": m.text()}
            for key in ("tool_calls", "tool_call_id", "name"):
                value = getattr(m, key, None) or (m.model_extra or {}).get(key)
                if value is not None:
                    message[key] = value
            out.append(message)
        return out


class CompletionBody(_Generation):
    prompt: str | list[str] | list[int] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_TOP)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    def token_budget(self) -> int | None:
        # The legacy endpoint's default is 16 tokens (OpenAI's documented default).
        return self.max_tokens or 16

    def logprobs_top(self) -> int | None:
        return self.logprobs

    def check_supported(self) -> None:
        super().check_supported()
        for name, refused in (("echo", self.echo),
                              ("suffix", bool(self.suffix)), ("best_of", (self.best_of or 1) > 1),
                              ("prompt", isinstance(self.prompt, list)
                               and len(self.prompt) > 1
                               and isinstance(self.prompt[0], str))):
            if refused:
                _unsupported(name)


def _unsupported(param: str) -> None:
    raise InvalidRequest(f"`{param}` is not supported by this engine", param=param,
                         code="unsupported_parameter")


_Body = TypeVar("_Body", bound=BaseModel)


def parse(raw: bytes, model: type[_Body]) -> _Body:
    """JSON bytes → a validated body; any problem is an InvalidRequest naming the field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}",
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"invalid `{param}`: {first['msg']}", param=param) from None
