"""Limits on a request's head (request line and header fields), enforced in the HTTP protocol
before anything reaches the app: its size and field count (431), and the time a connection
may take to deliver it (slow-header attacks: the connection is closed).

uvicorn's httptools protocol buffers an unfinished header field without limit, and it has no
timer between a connection's first byte and a complete head (its keep-alive timer only runs
between requests). h11's `h11_max_incomplete_event_size` bounds the size alone, and h11 is
several times slower. So this subclass of uvicorn's httptools protocol counts a head's bytes
as they arrive (memory stays within the limit plus one socket read) and arms one timer per
head. Bodies are untouched: the routes cap those (`read_body`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from spillgate.api.hot import HotRoute
from spillgate.api.hot_protocol import HotProtocol


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int = 64 * 1024
    max_fields: int = 100
    timeout_s: float = 10.0


class HeadLimitedProtocol(HotProtocol):
    """The node's protocol (api/hot_protocol.py: the hot routes without ASGI; a head leaves
    with its body), refusing oversized or slow request heads."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes arriving now belong to a request head
        self._read_bytes = 0  # bytes of reads that fell wholly inside the current head
        self._parsed_bytes = 0  # URL and header fields the parser has handed over
        self._head_fields = 0
        self._heads_done = 0
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # --- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_timer()  # a connection that never sends a head is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        counting, heads_done = self._in_head, self._heads_done
        super().data_received(data)
        if self._refusal is None and counting and self._in_head \
                and self._heads_done == heads_done:
            # The parser holds an unfinished field without limit, so unparsed bytes count
            # too: each read that lies wholly inside one head. (A head that began inside a
            # read escapes this count by at most that read, 256 KiB, and a body is never
            # counted against the next head; complete fields are counted exactly below.)
            self._read_bytes += len(data)
            self._check_size(self._read_bytes)
        if self._refusal is not None:
            self._reject(*self._refusal)

    # --- parser callbacks (the refusal is answered once the parser returns) --------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_timer()

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        self._check_size(self._parsed_bytes)
        if self._refusal is None:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        self._parsed_bytes += len(name) + len(value) + 4  # ": " and CRLF
        self._check_size(self._parsed_bytes)
        if self._refusal is None and self._head_fields > self.limits.max_fields:
            self._refusal = (431, f"request has more than {self.limits.max_fields} header "
                             "fields", "too_many_headers")
        if self._refusal is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_timer()
        self._in_head = False
        self._heads_done += 1
        if self._refusal is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._read_bytes, self._parsed_bytes, self._head_fields = True, 0, 0, 0
        if self._refusal is None:
            super().on_message_complete()

    def _check_size(self, size: int) -> None:
        if self._refusal is None and size > self.limits.max_bytes:
            self._refusal = (431, f"request head exceeds {self.limits.max_bytes} bytes",
                             "headers_too_large")

    # --- refusing ----------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_timeout)

    def _disarm_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        self._refusal = (408, "request head not received in time", "request_timeout")
        if self._read_bytes or self._parsed_bytes:  # a head was begun: say why it is dropped
            self._reject(*self._refusal)
        else:
            self.transport.close()

    def _reject(self, status: int, message: str, code: str) -> None:
        """Answer in the OpenAI error shape and close; a response already under way on this
        connection (a pipelined request) is not interleaved with: the connection just ends."""
        self._disarm_timer()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        self.logger.warning("refused a request head: %s", message)
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                     "param": None, "code": code}}).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n\r\n", body,
        ]))
        self.transport.close()


def head_limited_protocol(limits: HeadLimits, hot: Mapping[str, HotRoute] | None = None
                          ) -> type[HeadLimitedProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits, serving the `hot`
    routes itself (paths as the request line has them)."""
    paths = {path.encode("ascii"): route for path, route in (hot or {}).items()}
    return type("HeadLimitedProtocol", (HeadLimitedProtocol,), {"limits": limits, "hot": paths})
