"""What is stored from an answer, and how a hit answers in the form the client asked for.

Stored: the choices (each message, finish reason and logprobs), the usage and the model, from
a JSON answer or assembled from a completed stream. Replayed: a chat.completion JSON body, or
a well-formed SSE stream (a role chunk, the content, the finish chunk, a usage chunk when
`stream_options.include_usage`, then `[DONE]`), each with a fresh id and `created`. Pure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from spillgate.types import JSON


def answer_of(result: JSON) -> JSON | None:
    """The part of a chat.completion worth storing; None when it is not a plain answer."""
    choices = result.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(
            result.get("usage"), dict):
        return None
    kept: list[JSON] = []
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return None
        kept.append({"index": choice.get("index", len(kept)), "message": choice["message"],
                     "finish_reason": choice.get("finish_reason"),
                     "logprobs": choice.get("logprobs")})
    return {"choices": kept, "usage": result["usage"], "model": result.get("model")}


def calls_tools(answer: JSON) -> bool:
    return any(c["message"].get("tool_calls") or c["message"].get("function_call")
               or c.get("finish_reason") == "tool_calls" for c in answer["choices"])


def completion(answer: JSON, model: str) -> JSON:
    return {
        "id": _fresh_id(), "object": "chat.completion", "created": int(time.time()),
        "model": answer.get("model") or model, "choices": answer["choices"],
        "usage": answer["usage"],
    }  # fmt: skip


def sse_events(answer: JSON, model: str, include_usage: bool,
               final_frames: Callable[[JSON | None], list[bytes]] | None = None,
               ) -> list[bytes]:
    """The whole answer as SSE events, ending with `data: [DONE]`. `final_frames` turns the
    usage chunk (None when not asked for) into the frames before [DONE]: the node passes
    stream_cost's, so a hit ends like every stream (its cost on the usage chunk and in a
    comment); without it, the usage chunk as it is."""
    head: JSON = {"id": _fresh_id(), "object": "chat.completion.chunk",
                  "created": int(time.time()), "model": answer.get("model") or model}
    events = []
    for choice in answer["choices"]:
        index, message = choice["index"], choice["message"]
        events.append(_chunk(head, index, {"role": message.get("role", "assistant"),
                                           "content": ""}))
        if message.get("content"):
            events.append(_chunk(head, index, {"content": message["content"]}))
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            events.append(_chunk(head, index, {"tool_calls": calls}))
        events.append(_chunk(head, index, {}, choice.get("finish_reason") or "stop"))
    usage_chunk = {**head, "choices": [], "usage": answer["usage"]} if include_usage else None
    if final_frames is not None:
        events.extend(final_frames(usage_chunk))
    elif usage_chunk is not None:
        events.append(_event(usage_chunk))
    events.append(b"data: [DONE]\n\n")
    return events


class StreamCollector:
    """Assembles a streamed chat answer, chunk by chunk, into what `answer_of` stores."""

    def __init__(self) -> None:
        self._content: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._role: dict[int, str] = {}
        self.tool_calls = False
        self.broken = False  # a chunk it could not read: nothing is stored
        self.usage: JSON | None = None
        self.model: str | None = None

    def add(self, chunk: JSON) -> None:
        """Never raises: a chunk it cannot read only means the answer is not stored (the
        relay forwards the stream as it is)."""
        try:
            self._add(chunk)
        except (TypeError, ValueError, AttributeError, KeyError):
            self.broken = True

    def _add(self, chunk: JSON) -> None:
        self.model = self.model or chunk.get("model")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index") or 0)
            delta: dict[str, Any] = choice.get("delta") or {}
            self._content.setdefault(index, [])
            if delta.get("role"):
                self._role[index] = delta["role"]
            if delta.get("content"):
                self._content[index].append(delta["content"])
            if delta.get("tool_calls") or delta.get("function_call"):
                self.tool_calls = True
            if choice.get("finish_reason"):
                self._finish[index] = choice["finish_reason"]

    def answer(self, fallback_usage: JSON) -> JSON | None:
        """The answer when every choice finished (with the upstream's usage, else the
        gateway's count), else None."""
        if self.broken or self.tool_calls or not self._content or any(
                self._finish.get(i) is None for i in self._content):
            return None
        choices = [{"index": i, "message": {"role": self._role.get(i, "assistant"),
                                            "content": "".join(parts)},
                    "finish_reason": self._finish[i], "logprobs": None}
                   for i, parts in sorted(self._content.items())]
        return {"choices": choices, "usage": self.usage or fallback_usage, "model": self.model}


def _chunk(head: JSON, index: int, delta: JSON, finish: str | None = None) -> bytes:
    return _event({**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                        "finish_reason": finish}]})


def _event(obj: JSON) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _fresh_id() -> str:
    return f"chatcmpl-cache-{uuid.uuid4().hex}"
