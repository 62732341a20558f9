"""Anthropic Messages SSE events → OpenAI chat.completion.chunk dicts. Pure; no I/O.

An Anthropic stream is message_start, then per content block content_block_start /
content_block_delta* / content_block_stop, then message_delta (stop_reason, cumulative output
usage) and message_stop; `ping` may come anywhere and `error` replaces the rest. The OpenAI
client expects: a first chunk with the assistant role, content or tool-call deltas (tool calls
numbered from 0 among tool calls only, whatever the block index), one chunk with a
finish_reason, and, if asked, a last chunk with `choices: []` and `usage`.

A stream is only complete at message_stop: `finish()` raises UpstreamFailure otherwise, so a
cut connection never looks like a short but clean answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from spillgate.backends.anthropic_translate import finish_reason, openai_usage
from spillgate.backends.base import UpstreamFailure
from spillgate.types import JSON

_DATA = b"data:"
# Anthropic error types in a stream → the status to report. "overloaded" is Anthropic's 529,
# reported as 503 so that the client may come back later.
_ERROR_STATUS = {"overloaded_error": 503, "rate_limit_error": 429, "api_error": 500,
                 "timeout_error": 504}


def parse_sse_data(line: bytes) -> JSON | None:
    """The JSON object of a `data:` line; None for `event:` lines, comments and blank lines
    (every Anthropic data object names its own `type`, so the event line is redundant)."""
    line = line.strip()
    if not line.startswith(_DATA):
        return None
    try:
        data = orjson.loads(line[len(_DATA):])
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailure("upstream sent an invalid stream event") from exc
    if not isinstance(data, dict):
        raise UpstreamFailure("upstream sent a non-object stream event")
    return data


class AnthropicStreamTranslator:
    """Feed Anthropic events in order; collect the OpenAI chunks each one produces."""

    def __init__(self, *, model: str, created: int, include_usage: bool) -> None:
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._id = ""
        self._usage: JSON = {}
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool index
        self._finished = False
        self.done = False

    def feed(self, event: JSON) -> list[JSON]:
        """The OpenAI chunks for one Anthropic event (often none). Raises UpstreamFailure on
        an `error` event. Unknown event and delta types are skipped: Anthropic may add some."""
        if self.done:
            return []
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._on_delta(int(event.get("index", 0)), event.get("delta") or {})
        if kind == "content_block_start":
            return self._on_block_start(int(event.get("index", 0)),
                                        event.get("content_block") or {})
        if kind == "message_start":
            return self._on_message_start(event.get("message") or {})
        if kind == "message_delta":
            return self._on_message_delta(event.get("delta") or {}, event.get("usage") or {})
        if kind == "message_stop":
            return self._on_message_stop()
        if kind == "error":
            _raise_stream_error(event.get("error") or {})
        return []

    def finish(self) -> None:
        """Call when the upstream body ended: raises unless message_stop was seen."""
        if not self.done:
            raise UpstreamFailure("stream ended early: upstream closed before message_stop")

    # -- handlers

    def _on_message_start(self, message: JSON) -> list[JSON]:
        self._id = str(message.get("id", ""))
        self._model = str(message.get("model") or self._model)
        self._usage.update(message.get("usage") or {})
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_block_start(self, index: int, block: JSON) -> list[JSON]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        tool_index = len(self._tool_index)
        self._tool_index[index] = tool_index
        call = {"index": tool_index, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _on_delta(self, index: int, delta: JSON) -> list[JSON]:
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text") or ""
            return [self._chunk({"content": text})] if text else []
        if kind == "input_json_delta" and index in self._tool_index:
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return []
            call = {"index": self._tool_index[index], "function": {"arguments": fragment}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _on_message_delta(self, delta: JSON, usage: JSON) -> list[JSON]:
        # message_delta usage is cumulative; newer API versions may restate input counts too.
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        if "stop_reason" not in delta or self._finished:
            return []
        self._finished = True
        return [self._chunk({}, finish_reason(delta.get("stop_reason")))]

    def _on_message_stop(self) -> list[JSON]:
        self.done = True
        chunks = [] if self._finished else [self._chunk({}, "stop")]
        self._finished = True
        if self._include_usage:
            chunks.append({**self._base(), "choices": [], "usage": openai_usage(self._usage)})
        return chunks

    # -- chunk shapes

    def _base(self) -> JSON:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": self._model}

    def _chunk(self, delta: JSON, finish: str | None = None) -> JSON:
        return {**self._base(), "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _raise_stream_error(error: Any) -> None:
    kind = str(error.get("type", "error")) if isinstance(error, dict) else "error"
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    raise UpstreamFailure(
        f"upstream stream error ({kind}): {message}"[:500], upstream_status=_ERROR_STATUS.get(kind)
    )
