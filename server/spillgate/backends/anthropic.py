"""The Anthropic Messages API as a Backend: OpenAI in, OpenAI out, Anthropic on the wire.

Only chat/completions has an Anthropic counterpart; completions and embeddings are refused
with InvalidRequest. Retryable failures (connect errors, 429, 5xx/529, timeouts, a stream cut
before message_stop, an `error` event) surface as UpstreamFailure; other upstream errors are
mapped by status with the upstream's own message.

Like OpenAICompatBackend, stream() always yields the final usage chunk (`choices: []`), because
the ledger needs the usage whether or not the client asked for it; the service drops it when
the client's stream_options did not ask for it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import orjson

from spillgate.backends.anthropic_stream import AnthropicStreamTranslator, parse_sse_data
from spillgate.backends.anthropic_translate import from_anthropic_response, to_anthropic_request
from spillgate.backends.base import UpstreamCall, flattened
from spillgate.backends.http import Timeouts, UpstreamHttp
from spillgate.errors import ApiError, InvalidRequest, error_for_status
from spillgate.types import JSON, Tier

ANTHROPIC_VERSION = "2023-06-01"
_MESSAGES = "/messages"


class AnthropicBackend:
    """One Anthropic-protocol provider (api.anthropic.com or a compatible endpoint)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        *,
        timeouts: Timeouts,
        max_connections: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.tier: Tier = "api"
        self._clock = clock
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        self._http = UpstreamHttp(_v1(base_url), timeouts=timeouts,
                                  max_connections=max_connections, headers=headers)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    async def complete(self, call: UpstreamCall, body: JSON) -> JSON:
        payload = self._payload(call, body)
        payload.pop("stream", None)
        status, data = await self._http.post_json(_MESSAGES, payload)
        if status >= 400:
            raise error_for_status(status, _message(data, status))
        return from_anthropic_response(data, created=int(self._clock()))

    def stream(self, call: UpstreamCall, body: JSON) -> AsyncIterator[JSON]:
        return flattened(self.stream_batches(call, body))

    async def stream_batches(self, call: UpstreamCall, body: JSON) -> AsyncIterator[list[JSON]]:
        payload = self._payload(call, body)
        payload["stream"] = True
        translator = AnthropicStreamTranslator(
            model=call.upstream_model, created=int(self._clock()), include_usage=True
        )
        async with aclosing(self._http.stream_lines(_MESSAGES, payload)) as blocks:
            async for status, lines in blocks:
                if status >= 400:
                    raise error_for_status(status, _message(_loads_or_none(lines[0]), status))
                # No break at message_stop: reading to the end lets the pooled connection be
                # reused.
                chunks: list[JSON] = []
                try:
                    for line in lines:
                        event = parse_sse_data(line)
                        if event is not None:
                            chunks += translator.feed(event)
                except ApiError:
                    if chunks:  # what came before the failure still reaches the client
                        yield chunks
                    raise
                if chunks:
                    yield chunks
        translator.finish()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _payload(self, call: UpstreamCall, body: JSON) -> JSON:
        if call.endpoint != "chat/completions":
            raise InvalidRequest(
                f"/v1/{call.endpoint} is not available on Anthropic backend {self.name!r}: "
                "Anthropic serves chat/completions only"
            )
        return to_anthropic_request(body, call.upstream_model)


def _v1(base_url: str) -> str:
    """Accept both https://api.anthropic.com and …/v1 (the form the OpenAI backends use)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _message(data: Any, status: int) -> str:
    """Anthropic errors read {"type": "error", "error": {"type": …, "message": …}}."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or f"upstream error {status}")
    return f"upstream error {status}"
