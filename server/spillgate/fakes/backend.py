"""An in-process backend behind the `Backend` protocol, scripted call by call.

The body is encoded as the real adapter would (`wire`: OpenAI JSON, or the Anthropic
translation) before the script runs, so malformed input breaks here exactly where it would
break a real backend.

It lets `httpx.ASGITransport` tests drive every exit of the request path in milliseconds: an
answer, an answer without usage, an upstream failure, any other exception, a call that hangs
until it is cancelled, a stream that fails after its first chunk. It counts calls in progress
(`active`), so a test sees whether a cancelled request really stopped its backend call.

Paired with `AlwaysReady`, a supervisor stand-in whose engine is always ready.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from spillgate.backends.base import UpstreamCall, single_chunks
from spillgate.types import JSON, Tier


@dataclass(frozen=True, slots=True)
class Script:
    """What the next call does (the default: a normal answer with usage)."""

    error: BaseException | None = None  # raised before anything is returned
    usage: bool = True  # False: the answer (or stream) carries no usage
    garbled_usage: bool = False  # usage present but not numbers
    hang: bool = False  # wait until cancelled (a client leaving, a deadline)
    error_after_first: BaseException | None = None  # streams: raised after the first chunk
    hang_after_first: bool = False  # streams: wait after the first chunk until cancelled
    # token log-probabilities of the answer, returned when the request asks for logprobs
    # (None: the backend's default; () : the engine returns none)
    logprobs: tuple[float, ...] | None = None


class FakeBackend:
    """A backend whose calls follow the queued scripts, then answer normally."""

    def __init__(self, name: str, tier: Tier, *, completion_tokens: int = 3,
                 wire: Callable[[UpstreamCall, JSON], object] | None = None,
                 logprobs: tuple[float, ...] = (-0.1, -0.3)) -> None:
        self.name = name
        self.tier: Tier = tier
        self.completion_tokens = completion_tokens
        self.logprobs = logprobs
        # Encode each request as the real adapter would (e.g. Anthropic translation, then
        # JSON serialization), so a body the adapter cannot handle fails here as it would there.
        self.wire = wire
        self.scripts: deque[Script] = deque()
        self.calls: list[JSON] = []
        self.active = 0  # calls started and not yet finished or cancelled
        self.cancelled = 0
        self.started = asyncio.Event()  # set when a call starts (for hang tests)

    def then(self, *scripts: Script) -> FakeBackend:
        self.scripts.extend(scripts)
        return self

    def _next(self, call: UpstreamCall, body: JSON) -> Script:
        if self.wire is not None:
            self.wire(call, body)
        self.calls.append(body)
        self.started.set()
        return self.scripts.popleft() if self.scripts else Script()

    async def _hang(self) -> None:
        try:
            await asyncio.Event().wait()
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    async def _enter(self, script: Script) -> None:
        if script.hang:
            await self._hang()
        if script.error is not None:
            raise script.error

    def _usage(self, script: Script) -> JSON:
        if script.garbled_usage:
            return {"prompt_tokens": "many", "completion_tokens": [], "total_tokens": None}
        return {"prompt_tokens": 5, "completion_tokens": self.completion_tokens,
                "total_tokens": 5 + self.completion_tokens}

    async def complete(self, call: UpstreamCall, body: JSON) -> JSON:
        script = self._next(call, body)
        self.active += 1
        try:
            await self._enter(script)
            answer: JSON = {
                "id": f"fake-{call.request_id}", "object": "chat.completion", "created": 0,
                "model": call.upstream_model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
            }
            if body.get("logprobs") not in (None, False):
                answer["choices"][0]["logprobs"] = self._logprobs(call, script)
            if script.usage:
                answer["usage"] = self._usage(script)
            return answer
        finally:
            self.active -= 1

    def _logprobs(self, call: UpstreamCall, script: Script) -> JSON:
        """The OpenAI shape: chat `content: [{token, logprob, top_logprobs}]`; completions
        parallel `tokens` / `token_logprobs` lists."""
        values = self.logprobs if script.logprobs is None else script.logprobs
        tokens = [f"t{i}" for i in range(len(values))]
        if call.endpoint == "completions":
            return {"tokens": tokens, "token_logprobs": list(values),
                    "top_logprobs": None, "text_offset": list(range(len(values)))}
        return {"content": [{"token": t, "logprob": v, "bytes": None, "top_logprobs": []}
                            for t, v in zip(tokens, values, strict=True)]}

    async def stream(self, call: UpstreamCall, body: JSON) -> AsyncIterator[JSON]:
        script = self._next(call, body)
        self.active += 1
        try:
            await self._enter(script)
            base = {"id": f"fake-{call.request_id}", "object": "chat.completion.chunk",
                    "created": 0, "model": call.upstream_model}
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                               "content": "o"}}]}
            if script.error_after_first is not None:
                raise script.error_after_first
            if script.hang_after_first:
                await self._hang()
            yield {**base, "choices": [{"index": 0, "delta": {"content": "k"},
                                        "finish_reason": "stop"}]}
            if script.usage:
                yield {**base, "choices": [], "usage": self._usage(script)}
        finally:
            self.active -= 1

    def stream_batches(self, call: UpstreamCall, body: JSON) -> AsyncIterator[list[JSON]]:
        return single_chunks(self.stream(call, body))

    async def aclose(self) -> None:
        return None


class AlwaysReady:
    """A supervisor stand-in: the engine behind a FakeBackend is always ready."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True
        self.unsupported: frozenset[str] = frozenset()

    def set_health_urls(self, urls: Sequence[str]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def wait_ready(self, timeout_s: float) -> bool:
        return True

    async def stop(self) -> None:
        return None
