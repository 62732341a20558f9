"""Pooled HTTP to one upstream, on aiohttp.

Why aiohttp and not httpx's own transport: on this class of machine httpx's connection pool
is the bottleneck under concurrency (shared/BASELINES.md: 9-11% of direct throughput at 64
concurrent requests versus 63% for aiohttp). scripts/bench_gateway.py measures our choice.
One `UpstreamHttp` per backend: one connection pool, explicit connect/read/total timeouts.
POSTs to a plain-http local engine skip aiohttp (backends/plain_http.py: ~45 µs of CPU less
per call), streamed ones too (aiohttp's read side was ~20% of the gateway's CPU per relayed
chunk); they keep a pool of their own, of the same size.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from spillgate.backends.base import UpstreamFailure
from spillgate.backends.plain_http import Answer, PlainHttpPool


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    read_s: float
    total_s: float | None = None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3),
    the latter counted from `now` (default: the wall clock). None when unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class UpstreamHttp:
    """JSON and SSE calls to one base URL through one keep-alive pool."""

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts,
        max_connections: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
        )
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._plain = _plain_pool(self.base_url, timeouts, max_connections, self._headers)
        self._plain_prefix = urlsplit(self.base_url).path.encode("ascii") if self._plain else b""

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running event loop, not the one at construction.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
            )
        return self._session

    async def post_json(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        """POST a JSON body; return (status, parsed JSON). Raises UpstreamFailure on I/O errors
        and on 429/5xx; other statuses are returned for the caller to map."""
        if self._plain is not None:
            answer = await self._plain.post(self._plain_prefix + path.encode("ascii"),
                                            orjson.dumps(body))
            retry_after = answer.headers.get(b"retry-after")
            _raise_for_status(answer.status, answer.reason, answer.body,
                              None if retry_after is None else retry_after.decode("latin-1"))
            return answer.status, _json_or_error(answer.body, answer.status)
        try:
            async with self._client().post(self.base_url + path, data=orjson.dumps(body)) as r:
                raw = await r.read()
                await _raise_for_retryable(r, raw)
                return r.status, _json_or_error(raw, r.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_failure(exc) from exc

    async def get_text(self, url: str) -> tuple[int, str]:
        """GET an absolute URL through this pool (health checks, /metrics scrapes)."""
        try:
            async with self._client().get(url) as r:
                return r.status, await r.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_failure(exc) from exc

    async def stream_lines(
        self, path: str, body: Any
    ) -> AsyncGenerator[tuple[int, list[bytes]]]:
        """POST and yield (status, lines): the complete lines of the response body that one
        read brought (everything that had arrived; nothing is held back to wait for more), so
        a caller can pass on in one piece what came in one piece, and a chunk costs one hop
        instead of one per line. A non-200 body comes whole as the one line, so callers can
        read a JSON error body without a second call."""
        if self._plain is not None:
            pieces = self._plain.stream(self._plain_prefix + path.encode("ascii"),
                                        orjson.dumps(body))
            async with aclosing(pieces):
                async for status, lines in _plain_lines(pieces):
                    yield status, lines
            return
        try:
            async with self._client().post(self.base_url + path, data=orjson.dumps(body)) as r:
                if r.status >= 400:
                    raw = await r.read()
                    await _raise_for_retryable(r, raw)
                    yield r.status, [raw]
                    return
                status, tail = r.status, b""
                async for block in r.content.iter_any():
                    lines, tail = complete_lines(tail, block)
                    if lines:
                        yield status, lines
                if tail:  # a body that ends without a newline
                    yield status, [tail]
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_failure(exc) from exc

    async def aclose(self) -> None:
        if self._plain is not None:
            self._plain.close()
        if self._session is not None:
            await self._session.close()


def _plain_pool(base_url: str, timeouts: Timeouts, limit: int,
                headers: Mapping[str, str]) -> PlainHttpPool | None:
    """The aiohttp-free pool for this upstream, when its calls fit it (plain_http's scope)."""
    url = urlsplit(base_url)
    if (url.scheme != "http" or not url.hostname or url.username or url.password
            or url.query or url.fragment or timeouts.total_s is not None
            or any(c in text for item in headers.items() for text in item for c in "\r\n\0")):
        return None  # (a field that could split the head is aiohttp's to refuse)
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    try:
        head = (f"Host: {url.netloc}\r\nAccept: */*\r\n{fields}").encode("latin-1")
        url.path.encode("ascii")
    except UnicodeEncodeError:
        return None
    return PlainHttpPool(url.hostname, url.port or 80, head, connect_s=timeouts.connect_s,
                         read_s=timeouts.read_s, limit=limit)


async def _plain_lines(pieces: AsyncIterator[Answer]) -> AsyncIterator[tuple[int, list[bytes]]]:
    """`stream_lines` over plain_http's pieces: the same lines, the same errors."""
    status, tail = 0, b""
    async for answer in pieces:
        status = answer.status
        if status >= 400:  # the whole body, in one piece
            retry_after = answer.headers.get(b"retry-after")
            _raise_for_status(status, answer.reason, answer.body,
                              None if retry_after is None else retry_after.decode("latin-1"))
            yield status, [answer.body]
            return
        lines, tail = complete_lines(tail, answer.body)
        if lines:
            yield status, lines
    if tail:  # a body that ends without a newline
        yield status, [tail]


def complete_lines(tail: bytes, block: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of `tail + block` (without their newline) and what follows the
    last newline: a line still arriving, b"" when the block ended with a newline."""
    lines = (tail + block if tail else block).split(b"\n")
    return lines, lines.pop()


async def _raise_for_retryable(r: aiohttp.ClientResponse, raw: bytes) -> None:
    _raise_for_status(r.status, r.reason, raw, r.headers.get("retry-after"))


def _raise_for_status(status: int, reason: str | None, raw: bytes,
                      retry_after: str | None) -> None:
    if status == 429 or status >= 500:
        detail = _error_message(raw) or reason or ""
        raise UpstreamFailure(
            f"upstream answered {status}: {detail}"[:500],
            upstream_status=status,
            retry_after_s=parse_retry_after(retry_after),
        )


def _json_or_error(raw: bytes, status: int) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailure(f"upstream sent invalid JSON (status {status})") from exc
    if not isinstance(data, dict):
        raise UpstreamFailure(f"upstream sent a non-object JSON body (status {status})")
    return data


def _error_message(raw: bytes) -> str | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        msg = data["error"].get("message")
        return str(msg) if msg is not None else None
    return None


def _transport_failure(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamFailure("upstream timed out", upstream_status=504)
    return UpstreamFailure(f"upstream unreachable: {type(exc).__name__}", upstream_status=503)
