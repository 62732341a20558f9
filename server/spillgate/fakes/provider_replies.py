"""What the fake provider answers: requests of either protocol are read into one `Prompt`, a
deterministic `Reply` is made from it, and the reply is rendered in the asked wire format.

Tokens are whitespace words, so a test can compute every expected count from its own request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

JSON = dict[str, Any]
ANTHROPIC_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature",
     "top_p", "top_k", "tools", "tool_choice", "metadata", "thinking", "service_tier",
     "container", "mcp_servers", "context_management"}
)
_BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "document", "thinking",
                          "redacted_thinking"})
_MAX_ECHO_WORDS = 32


@dataclass(frozen=True, slots=True)
class Prompt:
    flavor: str  # "openai" | "anthropic"
    model: str
    tokens: int
    system_tokens: int
    system_key: str
    last_user: str
    tool_result: str | None  # text of a trailing tool result, if the turn ends with one
    tools: tuple[tuple[str, JSON], ...]
    forced_tool: str | None  # a tool name, or "*" for any tool
    tools_off: bool
    max_tokens: int | None


@dataclass(frozen=True, slots=True)
class Reply:
    serial: int
    pieces: tuple[str, ...]  # one token each; joined they make the text
    tool_name: str | None
    tool_id: str
    tool_args: str
    finish: str  # OpenAI finish_reason

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return len(self.pieces) + (max(1, len(self.tool_args) // 4) if self.tool_name else 0)


# ----------------------------------------------------------------------------- reading

def _text(content: Any) -> str:
    """Text of OpenAI or Anthropic content (string, parts or blocks; tool results included)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out: list[str] = []
    for part in content:
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                out.append(part["text"])
            elif part.get("type") == "tool_result":
                out.append(_text(part.get("content")))
    return " ".join(out)


def _words(text: str) -> int:
    return len(text.split())


def prompt_from_openai(body: JSON) -> Prompt:
    messages = body.get("messages")
    if messages is None:  # /v1/completions
        raw = body.get("prompt", "")
        text = raw if isinstance(raw, str) else " ".join(str(p) for p in raw)
        messages = [{"role": "user", "content": text}]
    system = " ".join(_text(m.get("content")) for m in messages
                      if m.get("role") in ("system", "developer"))
    users = [m for m in messages if m.get("role") == "user"]
    last = messages[-1] if messages else {}
    tools = tuple((t["function"]["name"], t["function"].get("parameters") or {})
                  for t in body.get("tools") or [] if t.get("type") == "function")
    choice = body.get("tool_choice")
    forced = ("*" if choice == "required" else (choice.get("function") or {}).get("name")
              if isinstance(choice, dict) else None)
    return Prompt(
        flavor="openai", model=str(body.get("model", "")),
        tokens=max(1, sum(_words(_text(m.get("content"))) for m in messages)),
        system_tokens=_words(system), system_key=system,
        last_user=_text(users[-1].get("content")) if users else "",
        tool_result=_text(last.get("content")) if last.get("role") == "tool" else None,
        tools=tools, forced_tool=forced, tools_off=choice == "none",
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
    )


def prompt_from_anthropic(body: JSON) -> Prompt:
    messages = body.get("messages") or []
    system = _text(body.get("system"))
    users = [m for m in messages if m.get("role") == "user" and _has_user_text(m)]
    last = messages[-1] if messages else {}
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    trailing_result = (last.get("role") == "user" and not _has_user_text(last)
                       and isinstance(last.get("content"), list))
    return Prompt(
        flavor="anthropic", model=str(body.get("model", "")),
        tokens=max(1, _words(system) + sum(_words(_text(m.get("content"))) for m in messages)),
        system_tokens=_words(system), system_key=system,
        last_user=_text(users[-1].get("content")) if users else "",
        tool_result=_text(last.get("content")) if trailing_result else None,
        tools=tuple((t["name"], t.get("input_schema") or {}) for t in body.get("tools") or []),
        forced_tool="*" if kind == "any" else choice.get("name") if kind == "tool" else None,
        tools_off=kind == "none", max_tokens=body.get("max_tokens"),
    )


def _has_user_text(message: JSON) -> bool:
    content = message.get("content")
    if isinstance(content, str):
        return True
    return any(isinstance(b, dict) and b.get("type") == "text" for b in content or [])


# ------------------------------------------------------------------------------ replying

def make_reply(prompt: Prompt, serial: int) -> Reply:
    tool_id = f"toolu_fake{serial}" if prompt.flavor == "anthropic" else f"call_fake{serial}"
    tool = _wanted_tool(prompt)
    if tool is not None:
        name, schema = tool
        args = orjson.dumps(sample_arguments(schema)).decode()
        # Claude usually says a word before calling a tool; OpenAI models usually do not.
        preamble = ("Calling", f" {name}.") if prompt.flavor == "anthropic" else ()
        return Reply(serial, preamble, name, tool_id, args, "tool_calls")
    if prompt.tool_result is not None:
        words = ["Tool", "result:", *prompt.tool_result.split()]
    else:
        words = ["Fake", "reply", "to:", *prompt.last_user.split()[:_MAX_ECHO_WORDS]]
    finish = "stop"
    if prompt.max_tokens is not None and len(words) > prompt.max_tokens:
        words, finish = words[: prompt.max_tokens], "length"
    pieces = tuple(w if i == 0 else " " + w for i, w in enumerate(words))
    return Reply(serial, pieces, None, tool_id, "", finish)


def _wanted_tool(prompt: Prompt) -> tuple[str, JSON] | None:
    if not prompt.tools or prompt.tools_off:
        return None
    named = [t for t in prompt.tools if t[0] == prompt.forced_tool]
    if named:
        return named[0]
    mentioned = [t for t in prompt.tools if t[0] in prompt.last_user]
    if prompt.forced_tool == "*":
        return (mentioned or list(prompt.tools))[0]
    asks = "tool" in prompt.last_user.lower() or bool(mentioned)
    if prompt.tool_result is None and asks:
        return (mentioned or list(prompt.tools))[0]
    return None


def sample_arguments(schema: JSON) -> JSON:
    """Deterministic arguments for a JSON schema's properties (a test computes the same)."""
    samples: dict[str, Any] = {"string": "fake", "integer": 1, "number": 1.5, "boolean": True,
                               "array": [], "object": {}}
    props = schema.get("properties") or {}
    return {name: samples.get(str(p.get("type")), "fake") for name, p in props.items()}


# ------------------------------------------------------------------------------ rendering

def _usage(reply: Reply, prompt: Prompt, cached: int) -> JSON:
    return {"prompt_tokens": prompt.tokens, "completion_tokens": reply.tokens,
            "total_tokens": prompt.tokens + reply.tokens,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _tool_calls(reply: Reply) -> list[JSON]:
    return [{"id": reply.tool_id, "type": "function",
             "function": {"name": reply.tool_name, "arguments": reply.tool_args}}]


def openai_completion(reply: Reply, prompt: Prompt, rid: str, created: int, cached: int) -> JSON:
    message: JSON = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_name:
        message["tool_calls"] = _tool_calls(reply)
    return {"id": rid, "object": "chat.completion", "created": created, "model": prompt.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": reply.finish}],
            "usage": _usage(reply, prompt, cached)}


def openai_chunks(reply: Reply, prompt: Prompt, rid: str, created: int,
                  cached: int | None) -> list[JSON]:
    """Chat chunks; the usage chunk only when `cached` is given (include_usage asked)."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": created,
            "model": prompt.model}

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in reply.pieces]
    if reply.tool_name:
        first = {**_tool_calls(reply)[0], "index": 0}
        first["function"] = {"name": reply.tool_name, "arguments": ""}
        out.append(chunk({"tool_calls": [first]}))
        out += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                for part in _thirds(reply.tool_args)]
    out.append(chunk({}, reply.finish))
    if cached is not None:
        out.append({**base, "choices": [], "usage": _usage(reply, prompt, cached)})
    return out


def text_completion(reply: Reply, prompt: Prompt, rid: str, created: int) -> JSON:
    return {"id": rid, "object": "text_completion", "created": created, "model": prompt.model,
            "choices": [{"index": 0, "text": reply.text, "logprobs": None,
                         "finish_reason": reply.finish}],
            "usage": _usage(reply, prompt, 0)}


def completion_chunks(reply: Reply, prompt: Prompt, rid: str, created: int,
                      include_usage: bool) -> list[JSON]:
    base = {"id": rid, "object": "text_completion", "created": created, "model": prompt.model}
    out = [{**base, "choices": [{"index": 0, "text": p, "logprobs": None,
                                 "finish_reason": None}]} for p in reply.pieces]
    out.append({**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                      "finish_reason": reply.finish}]})
    if include_usage:
        out.append({**base, "choices": [], "usage": _usage(reply, prompt, 0)})
    return out


def anthropic_events(reply: Reply, completion: JSON, usage: JSON) -> list[JSON]:
    """The event sequence of an Anthropic stream for this reply (ping included)."""
    message = {"id": completion["id"], "type": "message", "role": "assistant", "content": [],
               "model": completion["model"], "stop_reason": None, "stop_sequence": None,
               "usage": {**usage, "output_tokens": 1}}
    events: list[JSON] = [{"type": "message_start", "message": message}]
    index = 0
    if reply.pieces:
        events.append({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}})
        events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}} for p in reply.pieces]
        events.append({"type": "content_block_stop", "index": 0})
        index = 1
    if reply.tool_name:
        events.append({"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": reply.tool_id, "name": reply.tool_name, "input": {}}})
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part}}
                   for part in ["", *_thirds(reply.tool_args)]]
        events.append({"type": "content_block_stop", "index": index})
    stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[reply.finish]
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": stop, "stop_sequence": None},
                   "usage": {"output_tokens": usage["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


def _thirds(text: str) -> list[str]:
    step = max(1, -(-len(text) // 3))
    return [text[i: i + step] for i in range(0, len(text), step)]


# ------------------------------------------------------------------- Anthropic's own checks

def anthropic_problem(body: JSON, headers: Mapping[str, str]) -> tuple[int, str, str] | None:
    """(status, error type, message) for a request Anthropic would refuse, else None."""
    if not headers.get("x-api-key"):
        return 401, "authentication_error", "x-api-key header is required"
    if not headers.get("anthropic-version"):
        return 400, "invalid_request_error", "anthropic-version: header is required"
    extra = sorted(set(body) - ANTHROPIC_FIELDS)
    if extra:
        return 400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return 400, "invalid_request_error", "max_tokens: Field required (integer >= 1)"
    if not 0 <= float(body.get("temperature", 0)) <= 1:
        return 400, "invalid_request_error", "temperature: must be between 0 and 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "invalid_request_error", "messages: at least one message is required"
    return _messages_problem(messages) or _cache_control_problem(body)


def _cache_control_problem(body: JSON) -> tuple[int, str, str] | None:
    """Anthropic's prompt-cache rules: at most 4 breakpoints, each {"type": "ephemeral"},
    never inside a tool_result's content."""
    system = body.get("system")
    blocks = list(system) if isinstance(system, list) else []
    blocks += list(body.get("tools") or [])
    for msg in body["messages"]:
        content = msg.get("content")
        for block in content if isinstance(content, list) else []:
            blocks.append(block)
            inner = block.get("content") if block.get("type") == "tool_result" else None
            if isinstance(inner, list) and any("cache_control" in b for b in inner):
                return (400, "invalid_request_error", "cache_control may not be specified "
                        "within `tool_result.content`")
    marked = [b["cache_control"] for b in blocks if isinstance(b, dict) and "cache_control" in b]
    if any(not isinstance(m, dict) or m.get("type") != "ephemeral" for m in marked):
        return 400, "invalid_request_error", "cache_control.type: must be 'ephemeral'"
    if len(marked) > 4:
        return (400, "invalid_request_error",
                f"A maximum of 4 blocks with cache_control may be provided. Found {len(marked)}.")
    return None


def _messages_problem(messages: list[Any]) -> tuple[int, str, str] | None:
    previous_tool_ids: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            return 400, "invalid_request_error", f"messages.{i}.role: must be user or assistant"
        content = msg.get("content")
        blocks = content if isinstance(content, list) else []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in _BLOCK_TYPES:
                return 400, "invalid_request_error", f"messages.{i}.content: bad block {kind!r}"
            if kind == "text" and not block.get("text"):
                return 400, "invalid_request_error", f"messages.{i}: text blocks must be non-empty"
            if kind == "tool_result" and block.get("tool_use_id") not in previous_tool_ids:
                return (400, "invalid_request_error", f"messages.{i}.content: unexpected "
                        "tool_use_id found in tool_result blocks")
        previous_tool_ids = {str(b.get("id")) for b in blocks
                             if isinstance(b, dict) and b.get("type") == "tool_use"}
    return None
