"""OpenAI response bodies and SSE frames, built as plain dicts and encoded with orjson."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from spillgate.engines.llamacpp.logprobs import TokenLogprob, chat_logprobs, completion_logprobs
from spillgate.engines.llamacpp.scheduler import Chunk
from spillgate.errors import ApiError

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"


def usage(last: Chunk) -> dict[str, Any]:
    """OpenAI's usage; `prompt_tokens_details.cached_tokens`: the prompt's prefix found in
    the slot's KV cells, not computed again (the gateway's cost clock charges the rest)."""
    return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": last.cached_tokens}}


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_error(error: ApiError) -> bytes:
    return sse(error.body())


@dataclass(frozen=True, slots=True)
class Reply:
    """Identity shared by every body and chunk of one response."""

    kind: Kind
    model: str
    id: str
    created: int

    @classmethod
    def new(cls, kind: Kind, model: str) -> Reply:
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        return cls(kind, model, prefix + secrets.token_hex(12), int(time.time()))

    def _head(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created,
                "model": self.model}

    def logprobs(self, entries: Sequence[TokenLogprob] | None,
                 offset: int = 0) -> dict[str, Any] | None:
        """`choices[].logprobs` in this endpoint's shape; None when none were asked for."""
        if entries is None:
            return None
        return chat_logprobs(entries) if self.kind == "chat" else completion_logprobs(entries,
                                                                                       offset)

    def body(self, text: str, last: Chunk,
             logprobs: Sequence[TokenLogprob] | None = None) -> dict[str, Any]:
        """The whole non-streamed response."""
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0, "message": {"role": "assistant", "content": text},
                "logprobs": self.logprobs(logprobs), "finish_reason": last.finish_reason}
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": self.logprobs(logprobs),
                      "finish_reason": last.finish_reason}
            head = self._head("text_completion")
        return {**head, "choices": [choice], "usage": usage(last)}

    def chunk(self, text: str | None, finish_reason: str | None = None, *,
              role: bool = False, with_usage_field: bool = False,
              logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        """One streamed chunk: a delta (or the role opener), maybe its tokens' logprobs
        (`Reply.logprobs`) and the finish reason."""
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                {"content": text} if text is not None else {})
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": logprobs,
                                      "finish_reason": finish_reason}
            out = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            out = {**self._head("text_completion"), "choices": [
                {"index": 0, "text": text or "", "logprobs": logprobs,
                 "finish_reason": finish_reason}]}
        if with_usage_field:  # OpenAI sends "usage": null on every chunk once usage is asked
            out["usage"] = None
        return out

    def usage_chunk(self, last: Chunk) -> dict[str, Any]:
        name = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._head(name), "choices": [], "usage": usage(last)}
