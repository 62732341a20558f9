"""Provider prompt caching: Anthropic `cache_control` breakpoints on an OpenAI-shaped request.

Clients mark a breakpoint the way LiteLLM and OpenRouter document it: `cache_control:
{"type": "ephemeral"}` (optionally `"ttl": "5m" | "1h"`) on a content part, on a whole message
(it then applies to the message's last block), or on a tool. The Anthropic translation carries
each marker to the block Anthropic expects it on; Anthropic allows at most four per request,
so a fifth is refused here with a clear 400 instead of the provider's.

OpenAI-protocol upstreams (OpenAI, vLLM, our llama.cpp engine) cache prefixes automatically
and strict ones answer 400 to the unknown field, so `without_cache_control` removes the markers
before a body goes to them.
"""

from __future__ import annotations

from typing import Any

from spillgate.errors import InvalidRequest
from spillgate.types import JSON

FIELD = "cache_control"
MAX_BREAKPOINTS = 4  # Anthropic's limit per request
_TTLS = frozenset({"5m", "1h"})


def marker(holder: Any, where: str) -> JSON | None:
    """The validated `cache_control` of a part, message or tool (None when absent)."""
    if not isinstance(holder, dict) or holder.get(FIELD) is None:
        return None
    value = holder[FIELD]
    if (not isinstance(value, dict) or value.get("type") != "ephemeral"
            or set(value) - {"type", "ttl"} or value.get("ttl", "5m") not in _TTLS):
        raise InvalidRequest(
            f"`{where}.cache_control` must be {{\"type\": \"ephemeral\"}} with an optional "
            "ttl of \"5m\" or \"1h\"", param=f"{where}.cache_control")
    return dict(value)


def mark(block: JSON, cache_control: JSON | None) -> JSON:
    if cache_control is not None:
        block[FIELD] = cache_control
    return block


def check_breakpoints(anthropic_body: JSON) -> None:
    """Refuse more breakpoints than Anthropic accepts (its own error would be a 400 too)."""
    count = sum(1 for block in _blocks(anthropic_body) if FIELD in block)
    if count > MAX_BREAKPOINTS:
        raise InvalidRequest(
            f"at most {MAX_BREAKPOINTS} cache_control breakpoints per request (found {count})",
            param=FIELD)


def _blocks(body: JSON) -> list[JSON]:
    system = body.get("system")
    blocks = [b for b in system if isinstance(b, dict)] if isinstance(system, list) else []
    blocks += [t for t in body.get("tools") or [] if isinstance(t, dict)]
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            blocks += [b for b in content if isinstance(b, dict)]
    return blocks


def without_cache_control(body: JSON) -> JSON:
    """`body` with every marker removed (copied only where one is found)."""
    messages = body.get("messages")
    tools = body.get("tools")
    if not _has_marker(messages) and not _has_marker(tools):
        return body
    out = dict(body)
    if isinstance(messages, list):
        out["messages"] = [_strip_message(m) for m in messages]
    if isinstance(tools, list):
        out["tools"] = [_strip(t) for t in tools]
    return out


def _has_marker(items: Any) -> bool:
    if not isinstance(items, list):
        return False
    for item in items:
        if not isinstance(item, dict):
            continue
        if FIELD in item:
            return True
        content = item.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and FIELD in p
                                             for p in content):
            return True
    return False


def _strip(item: Any) -> Any:
    if isinstance(item, dict) and FIELD in item:
        return {k: v for k, v in item.items() if k != FIELD}
    return item


def _strip_message(message: Any) -> Any:
    message = _strip(message)
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        message = {**message, "content": [_strip(p) for p in message["content"]]}
    return message
