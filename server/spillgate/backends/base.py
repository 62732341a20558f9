"""The one interface every backend implements, local engine or paid API.

A backend speaks the OpenAI protocol to the service: it takes an OpenAI-shaped request body and
returns an OpenAI-shaped response (or stream of chunk dicts), whatever it speaks upstream.
Failures are raised as `spillgate.errors.ApiError` subclasses; `UpstreamFailure` marks the ones
worth a retry or a fallback (connection refused or reset, 429, 5xx, timeouts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from spillgate.errors import ApiError
from spillgate.types import JSON, Endpoint, Tier


class UpstreamFailure(ApiError):
    """A backend failed in a way another attempt or another backend might not.

    `status` is what the client gets if nothing else can serve: 502 by default, 429 or 503/504
    when the upstream said so. `retry_after_s` carries an upstream's Retry-After.
    """

    status = 502
    error_type = "api_error"
    default_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.upstream_status = upstream_status
        if upstream_status == 429:
            self.status = 429
            self.error_type = "rate_limit_error"
            self.code = "rate_limit_exceeded"
        elif upstream_status in (503, 504):
            self.status = upstream_status


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What a backend needs for one call besides the body."""

    endpoint: Endpoint
    request_id: str
    upstream_model: str


class Backend(Protocol):
    """A place a request can be served: our llama.cpp engine, vLLM, or a paid API."""

    name: str
    tier: Tier

    async def complete(self, call: UpstreamCall, body: JSON) -> JSON:
        """One non-streamed call; returns the OpenAI response body (with `usage`)."""
        ...

    def stream(self, call: UpstreamCall, body: JSON) -> AsyncIterator[JSON]:
        """Streamed chat/completions call; yields OpenAI chunk objects (the final one carries
        `usage` when the body asked for `stream_options.include_usage`)."""
        ...

    def stream_batches(self, call: UpstreamCall, body: JSON) -> AsyncIterator[list[JSON]]:
        """`stream`'s chunks in the groups they arrived in: each list holds what one read of
        the upstream brought (never held back to wait for more), so the relay forwards it in
        one write. The relay's form; `single_chunks` for a backend without reads."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...


async def single_chunks(chunks: AsyncIterator[JSON]) -> AsyncIterator[list[JSON]]:
    """Batches of one chunk each (`Backend.stream_batches` of a backend without reads)."""
    try:
        async for chunk in chunks:
            yield [chunk]
    finally:  # closed at once, as the relay closes a stream (the upstream slot is freed)
        await _close(chunks)


async def flattened(batches: AsyncIterator[list[JSON]]) -> AsyncIterator[JSON]:
    """`Backend.stream` of a backend whose own form is `stream_batches`."""
    try:
        async for batch in batches:
            for chunk in batch:
                yield chunk
    finally:
        await _close(batches)


async def _close(stream: AsyncIterator[JSON] | AsyncIterator[list[JSON]]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


class Supervisor(Protocol):
    """Keeps a local backend's engine serving (`backends.supervisor.EngineSupervisor`)."""

    name: str
    unsupported: frozenset[str]  # request features the engine declares it cannot serve

    @property
    def ready(self) -> bool:
        """True while the engine answers its health check."""
        ...

    async def start(self) -> None: ...

    def set_health_urls(self, urls: Sequence[str]) -> None:
        """Attach mode with DNS discovery: probe the pods the name resolves to now."""
        ...

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once the engine answers its health check, False after `timeout_s`."""
        ...

    async def stop(self) -> None: ...
