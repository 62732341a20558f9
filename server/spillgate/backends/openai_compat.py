"""Backends that speak the OpenAI protocol upstream: our llama.cpp engine, vLLM, and paid
OpenAI-compatible APIs (OpenAI, Azure OpenAI, Groq, Together, OpenRouter, a remote vLLM).

A backend may have several base URLs (replicas of one model); each call goes to the replica
with the fewest requests in flight from this gateway, which is always fresh, unlike scraped
engine metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import orjson

from spillgate.backends.base import UpstreamCall, UpstreamFailure, flattened
from spillgate.backends.http import Timeouts, UpstreamHttp
from spillgate.backends.prompt_cache import without_cache_control
from spillgate.errors import error_for_status
from spillgate.types import JSON, Tier

_DATA = b"data:"
_DONE = b"[DONE]"


class _Replica:
    __slots__ = ("http", "inflight")

    def __init__(self, http: UpstreamHttp) -> None:
        self.http = http
        self.inflight = 0


class OpenAICompatBackend:
    """One model (local) or one provider (paid) reached over the OpenAI wire format."""

    def __init__(
        self,
        name: str,
        tier: Tier,
        base_urls: Sequence[str],
        *,
        timeouts: Timeouts,
        max_connections: int,
        api_key: str | None = None,
    ) -> None:
        if not base_urls:
            raise ValueError(f"backend {name!r} needs at least one base URL")
        self.name = name
        self.tier: Tier = tier
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._replicas = [self._replica(u) for u in base_urls]
        self._retired: list[_Replica] = []

    def _replica(self, url: str) -> _Replica:
        return _Replica(UpstreamHttp(url, timeouts=self._timeouts,
                                     max_connections=self._max_connections,
                                     headers=self._headers))

    async def set_base_urls(self, base_urls: Sequence[str]) -> None:
        """Replace the replica set (DNS discovery): replicas still listed keep their pool and
        in-flight count; removed ones finish what they carry and are closed once idle."""
        if not base_urls:
            raise ValueError(f"backend {self.name!r} needs at least one base URL")
        known = {r.http.base_url: r for r in self._replicas}
        wanted = [u.rstrip("/") for u in base_urls]
        self._replicas = [known.get(u) or self._replica(u) for u in wanted]
        self._retired += [r for u, r in known.items() if u not in wanted]
        idle = [r for r in self._retired if r.inflight == 0]
        self._retired = [r for r in self._retired if r.inflight > 0]
        for replica in idle:
            await replica.http.aclose()

    @property
    def base_urls(self) -> list[str]:
        return [r.http.base_url for r in self._replicas]

    def inflight(self) -> int:
        return sum(r.inflight for r in self._replicas)

    def _pick(self) -> _Replica:
        if len(self._replicas) == 1:
            return self._replicas[0]
        return min(self._replicas, key=lambda r: r.inflight)

    async def complete(self, call: UpstreamCall, body: JSON) -> JSON:
        replica = self._pick()
        replica.inflight += 1
        try:
            status, data = await replica.http.post_json(
                "/" + call.endpoint, _with_model(body, call.upstream_model)
            )
        finally:
            replica.inflight -= 1
        if status >= 400:
            raise error_for_status(status, _message(data, status))
        return data

    def stream(self, call: UpstreamCall, body: JSON) -> AsyncIterator[JSON]:
        return flattened(self.stream_batches(call, body))

    async def stream_batches(self, call: UpstreamCall, body: JSON) -> AsyncIterator[list[JSON]]:
        replica = self._pick()
        replica.inflight += 1
        upstream_body = _with_model(body, call.upstream_model)
        # Always ask for usage: the ledger needs it even when the client did not.
        upstream_body["stream_options"] = {**(body.get("stream_options") or {}),
                                           "include_usage": True}
        finished = False
        lines = aclosing(replica.http.stream_lines("/" + call.endpoint, upstream_body))
        try:
            async with lines as blocks:
                async for status, block in blocks:
                    if status >= 400:
                        raise error_for_status(status, _message(_loads(block[0]), status))
                    chunks, finished, failure = _events(block)
                    if chunks:  # what came before a failure still reaches the client
                        yield chunks
                    if failure is not None:
                        raise failure
                    if finished:
                        break
        finally:
            replica.inflight -= 1
        if not finished:
            raise UpstreamFailure("upstream stream ended before [DONE]")

    def metrics_urls(self) -> list[str]:
        """Prometheus endpoints of the replicas: engines serve /metrics beside /v1."""
        return [r.http.base_url.removesuffix("/v1") + "/metrics" for r in self._replicas]

    async def aclose(self) -> None:
        for replica in [*self._replicas, *self._retired]:
            await replica.http.aclose()


def _with_model(body: JSON, model: str) -> JSON:
    """A copy for the upstream: its model name, and no Anthropic cache_control markers
    (OpenAI-protocol servers cache prefixes by themselves; strict ones refuse the field)."""
    return {**without_cache_control(body), "model": model}


def _events(lines: list[bytes]) -> tuple[list[JSON], bool, UpstreamFailure | None]:
    """The chunks of `data:` lines, up to `[DONE]` or a failure: (chunks, done, failure)."""
    chunks: list[JSON] = []
    for line in lines:
        payload = _sse_payload(line)
        if payload is None:
            continue
        if payload == _DONE:
            return chunks, True, None
        try:
            chunk = _loads(payload)
        except UpstreamFailure as exc:
            return chunks, False, exc
        if "error" in chunk:
            return chunks, False, UpstreamFailure(_message(chunk, 502))
        chunks.append(chunk)
    return chunks, False, None


def _sse_payload(line: bytes) -> bytes | None:
    line = line.strip()
    if not line.startswith(_DATA):
        return None
    return line[len(_DATA):].strip()


def _loads(raw: bytes) -> JSON:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailure("upstream sent an invalid stream event") from exc
    if not isinstance(data, dict):
        raise UpstreamFailure("upstream sent a non-object stream event")
    return data


def _message(data: Any, status: int) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or f"upstream error {status}")
    return f"upstream error {status}"
