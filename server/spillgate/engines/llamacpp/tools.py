"""Tool calling on the llama.cpp engine, for models whose chat template takes `tools`.

The template renders the tool definitions into the prompt (each model family has its own
format, and its template knows it); the model then answers in text, which is read back here
into OpenAI `tool_calls` when it is one of the two shapes open models use:

- Hermes / Qwen style: one or more `<tool_call>{"name": …, "arguments": {…}}</tool_call>`;
- Llama 3.1 JSON style: the whole answer is `{"name": …, "parameters"|"arguments": {…}}`
  (optionally after `<|python_tag|>`), or a list of such objects.

Anything else is an ordinary text answer. `tool_choice: "required"` or a named function is
enforced with a grammar (the answer must be one such JSON object), so the model cannot answer
in prose when the client demands a call. Models whose template takes no tools declare `tools`
unsupported (Engine.unsupported), and the gateway spills those requests.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson
from llama_cpp.llama_grammar import LlamaGrammar

from spillgate.errors import InvalidRequest

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_PYTHON_TAG = "<|python_tag|>"


def _call(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # some models already encode them
        encoded = arguments
    elif isinstance(arguments, dict):
        encoded = orjson.dumps(arguments).decode()
    else:
        return None
    return {"id": "call_" + secrets.token_hex(12), "type": "function",
            "function": {"name": obj["name"], "arguments": encoded}}


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """OpenAI `tool_calls` read from a model's answer, or None when it is plain text."""
    tagged = _HERMES.findall(text)
    if tagged:
        calls = [_call(_loads(t)) for t in tagged]
        return [c for c in calls if c] or None
    body = text.strip().removeprefix(_PYTHON_TAG).strip()
    if not body.startswith(("{", "[")):
        return None
    parsed = _loads(body)
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = [_call(item) for item in items]
    return calls if calls and all(calls) else None  # type: ignore[return-value]


def _names(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest("each tool needs `function.name`", param="tools")
        parameters = function.get("parameters")
        out[function["name"]] = parameters if isinstance(parameters, dict) else {
            "type": "object"}
    return out


def call_grammar(tools: list[dict[str, Any]], tool_choice: Any) -> str | None:
    """GBNF forcing one tool call when `tool_choice` demands it; None for `auto`/`none`."""
    names = _names(tools)
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidRequest(f"tool_choice names `{name}`, which is not in `tools`",
                                 param="tool_choice")
        chosen = {name: names[name]}
    elif tool_choice == "required":
        chosen = names
    else:
        return None
    schema = {"oneOf": [{"type": "object", "properties": {"name": {"const": n},
                                                          "arguments": p},
                         "required": ["name", "arguments"], "additionalProperties": False}
                        for n, p in chosen.items()]}
    try:
        grammar: str = LlamaGrammar.from_json_schema(orjson.dumps(schema).decode(),
                                                     verbose=False)._grammar
    except Exception as exc:  # the converter raises bare Exceptions on unsupported schemas
        raise InvalidRequest(f"a tool's parameters cannot be turned into a grammar: {exc}",
                             param="tools") from None
    return grammar


def with_tool_calls(reply: dict[str, Any]) -> dict[str, Any]:
    """A whole chat.completion whose text is read back into `tool_calls` when it is one."""
    choice = reply["choices"][0]
    calls = parse_tool_calls(choice["message"].get("content") or "")
    if calls is None:
        return reply
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    return {**reply, "choices": [{**choice, "message": message,
                                  "finish_reason": "tool_calls"}]}


def as_stream(reply: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunks of a whole answer sent as a stream: role, content or tool calls, finish,
    usage (a tool call is only known once the answer is complete, so it comes in one piece)."""
    head = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"],
            "model": reply["model"]}
    choice = reply["choices"][0]
    message = choice["message"]
    usage_field = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None,
              logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish}], **usage_field}

    chunks = [chunk({"role": "assistant", "content": ""})]
    # The whole answer's logprobs (when asked for) travel with the one chunk carrying it.
    if message.get("tool_calls"):
        chunks.append(chunk({"tool_calls": [{"index": i, **call} for i, call
                                            in enumerate(message["tool_calls"])]},
                            logprobs=choice.get("logprobs")))
    elif message.get("content"):
        chunks.append(chunk({"content": message["content"]}, logprobs=choice.get("logprobs")))
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": reply["usage"]})
    return chunks
