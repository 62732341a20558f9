"""OpenAI chat ⇄ Anthropic Messages translation: pure functions over JSON dicts, no I/O.

Request (OpenAI → Anthropic):
- `system` and `developer` messages are joined (blank line between) into top-level `system`;
- user/assistant turns keep their order; consecutive same-role turns are merged, because
  Anthropic expects the roles to alternate; `tool` messages become `tool_result` blocks of a
  user turn (consecutive results share one turn, results first as Anthropic requires);
- content parts: `text` → text block; `image_url` with a `data:` URL → base64 image block,
  with an http(s) URL → url image block; other part kinds (audio, files) are refused;
- tools: function tools → `{name, description, input_schema}`; `tool_choice` auto/none/
  required/named → auto/none/any/tool; `parallel_tool_calls: false` → disable_parallel_tool_use;
- assistant `tool_calls` → `tool_use` blocks with the arguments JSON-parsed;
- `max_completion_tokens` or `max_tokens` → `max_tokens` (Anthropic requires it; the gateway
  always sets one, DEFAULT_MAX_TOKENS is only a safety net); `temperature` is clamped to
  Anthropic's 0..1; `top_p`; `stop` → `stop_sequences`; `user` → `metadata.user_id`; `stream`.

Everything else is left out, since Anthropic rejects unknown fields. DROPPED_FIELDS lists the
OpenAI fields known to be dropped on purpose; REFUSED_FIELDS are those whose silent loss would
change what the client gets, so they raise InvalidRequest instead.

Response (Anthropic → OpenAI): text blocks → `content`, tool_use → `tool_calls` (arguments as
a JSON string), stop_reason → finish_reason (STOP_REASONS), usage → OpenAI usage where
prompt_tokens counts cache reads and cache writes too, and cached_tokens is the cache reads.
`to_anthropic_response` is the reverse, used by the fake provider to answer like Anthropic.
"""

from __future__ import annotations

from typing import Any

import orjson

from spillgate.backends.prompt_cache import check_breakpoints, mark, marker
from spillgate.errors import InvalidRequest
from spillgate.types import JSON

DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_MAX_TEMPERATURE = 1.0

DROPPED_FIELDS = frozenset(
    {"n", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
     "response_format", "seed", "stream_options", "service_tier", "store", "metadata",
     "reasoning_effort", "web_search_options", "prompt_cache_key", "safety_identifier"}
)
REFUSED_FIELDS = frozenset({"functions", "function_call", "audio", "modalities", "prediction"})

STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                   "content_filter": "refusal"}


# ---------------------------------------------------------------- request: OpenAI → Anthropic

def to_anthropic_request(body: JSON, model: str) -> JSON:
    """The Anthropic Messages body for an OpenAI chat/completions body."""
    refused = sorted(REFUSED_FIELDS.intersection(body))
    if refused:
        raise InvalidRequest(
            f"{refused[0]!r} is not supported by Anthropic backends", param=refused[0]
        )
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("n > 1 is not supported by Anthropic backends", param="n")
    system, messages = _split_messages(body.get("messages") or [])
    out: JSON = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), ANTHROPIC_MAX_TEMPERATURE)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    _add_tools(body, out)
    check_breakpoints(out)
    return out


def _split_messages(messages: list[JSON]) -> tuple[str | list[JSON], list[JSON]]:
    """(system, turns). `system` stays one string unless a system part carries a
    cache_control breakpoint: then it is a list of text blocks, the marker on its block."""
    system_blocks: list[JSON] = []
    turns: list[JSON] = []
    for index, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("system", "developer"):
            system_blocks += _system_blocks(msg, role, f"messages[{index}]")
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"), f"messages[{index}]")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, f"messages[{index}]")
        elif role == "tool":
            blocks = [_tool_result(msg)]
        else:
            raise InvalidRequest(
                f"message role {role!r} is not supported by Anthropic backends; use tools",
                param="messages",
            )
        _mark_last(blocks, marker(msg, f"messages[{index}]"))
        _append_turn(turns, "user" if role == "tool" else role, blocks)
    if any("cache_control" in b for b in system_blocks):
        return system_blocks, turns
    return "\n\n".join(b["text"] for b in system_blocks), turns


def _system_blocks(msg: JSON, role: str, where: str) -> list[JSON]:
    content = msg.get("content")
    if content is None or isinstance(content, str):
        blocks = [{"type": "text", "text": content}] if content else []
    else:
        blocks = []
        for i, part in enumerate(content):
            if part.get("type") != "text":
                raise InvalidRequest(f"{role} messages may only hold text parts",
                                     param="messages")
            text = str(part.get("text", ""))
            if text:
                blocks.append(mark({"type": "text", "text": text},
                                   marker(part, f"{where}.content[{i}]")))
    _mark_last(blocks, marker(msg, where))
    return blocks


def _mark_last(blocks: list[JSON], cache_control: JSON | None) -> None:
    """A message-level breakpoint belongs on the message's last block (Anthropic has no
    message-level field)."""
    if cache_control is not None and blocks:
        blocks[-1]["cache_control"] = cache_control


def _append_turn(turns: list[JSON], role: str, blocks: list[JSON]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _user_blocks(content: Any, where: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = (_part_block(p, f"{where}.content[{i}]") for i, p in enumerate(content))
    return [b for b in blocks if b is not None]


def _part_block(part: JSON, where: str) -> JSON | None:
    kind = part.get("type")
    if kind == "text":
        text = str(part.get("text", ""))
        return mark({"type": "text", "text": text}, marker(part, where)) if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else str(image or "")
        return mark({"type": "image", "source": _image_source(url)}, marker(part, where))
    raise InvalidRequest(
        f"content part {kind!r} is not supported by Anthropic backends", param="messages"
    )


def _image_source(url: str) -> JSON:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise InvalidRequest("image data URLs must be base64 encoded", param="messages")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise InvalidRequest("image_url must be a data: or http(s) URL", param="messages")


def _assistant_blocks(msg: JSON, where: str) -> list[JSON]:
    content = msg.get("content")
    blocks: list[JSON] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content:
        for i, part in enumerate(content):
            text = part.get("text") or part.get("refusal") or ""
            if text:
                blocks.append(mark({"type": "text", "text": str(text)},
                                   marker(part, f"{where}.content[{i}]")))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                       "input": _parse_arguments(fn.get("arguments"))})
    return blocks


def _parse_arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "assistant tool_calls arguments must be valid JSON", param="messages"
        ) from exc


def _tool_result(msg: JSON) -> JSON:
    content = msg.get("content")
    if not isinstance(content, str):
        content = [{"type": "text", "text": str(p.get("text", ""))} for p in content or []]
    return {"type": "tool_result", "tool_use_id": msg.get("tool_call_id"), "content": content}


def _add_tools(body: JSON, out: JSON) -> None:
    tools = body.get("tools")
    if tools:
        out["tools"] = [mark(_tool(t), marker(t, f"tools[{i}]")) for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None and tools:
        out["tool_choice"] = choice


def _tool(tool: JSON) -> JSON:
    if tool.get("type") != "function":
        raise InvalidRequest(
            f"tool type {tool.get('type')!r} is not supported by Anthropic backends",
            param="tools",
        )
    fn = tool.get("function") or {}
    out: JSON = {"name": fn.get("name"),
                 "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any) -> JSON | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")


# -------------------------------------------------------------- response: Anthropic → OpenAI

def from_anthropic_response(data: JSON, *, created: int) -> JSON:
    """The OpenAI chat.completion for an Anthropic Message."""
    texts: list[str] = []
    calls: list[JSON] = []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block))
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None,
                     "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": str(data.get("id", "")),
        "object": "chat.completion",
        "created": created,
        "model": str(data.get("model", "")),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(data.get("stop_reason"))}],
        "usage": openai_usage(data.get("usage") or {}),
    }


def _tool_call(block: JSON) -> JSON:
    return {"id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"),
                         "arguments": orjson.dumps(block.get("input") or {}).decode()}}


def finish_reason(stop_reason: Any) -> str:
    """OpenAI finish_reason for an Anthropic stop_reason (unknown ones read as "stop")."""
    return STOP_REASONS.get(str(stop_reason), "stop")


def openai_usage(usage: JSON) -> JSON:
    """OpenAI usage from Anthropic usage: input_tokens excludes cached tokens, prompt_tokens
    must include them, or cost and rate limits would undercount cached prompts."""
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = int(usage.get("output_tokens") or 0)
    usage_out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion,
                       "prompt_tokens_details": {"cached_tokens": cache_read}}
    if cache_write:  # billed above the input rate; LiteLLM names them so too
        usage_out["cache_creation_input_tokens"] = cache_write
    return usage_out


# ------------------------------------------------ reverse response: OpenAI → Anthropic (fakes)

def to_anthropic_response(completion: JSON, *, cache_creation_tokens: int = 0) -> JSON:
    """The Anthropic Message an Anthropic API would have sent for an OpenAI chat.completion.
    `cache_creation_tokens` of the prompt are reported as cache writes, not plain input."""
    choice = completion["choices"][0]
    msg = choice.get("message") or {}
    content: list[JSON] = []
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        fn = call["function"]
        content.append({"type": "tool_use", "id": call["id"], "name": fn["name"],
                        "input": _parse_arguments(fn.get("arguments"))})
    return {
        "id": completion["id"], "type": "message", "role": "assistant", "content": content,
        "model": completion["model"],
        "stop_reason": _FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(completion["usage"], cache_creation_tokens),
    }


def anthropic_usage(usage: JSON, cache_creation_tokens: int = 0) -> JSON:
    """Anthropic usage for OpenAI usage (inverse of `openai_usage`)."""
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {"input_tokens": int(usage["prompt_tokens"]) - cached - cache_creation_tokens,
            "cache_creation_input_tokens": cache_creation_tokens,
            "cache_read_input_tokens": cached,
            "output_tokens": int(usage["completion_tokens"])}
