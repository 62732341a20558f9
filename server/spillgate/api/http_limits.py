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
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int = 64 * 1024
    max_fields: int = 100
    timeout_s: float = 10.0


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing oversized or slow request heads."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes arriving now belong to a request head
        self._head_bytes = 0
        self._head_fields = 0
        self._heads_done = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    # --- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_timer()  # a connection that never sends a head is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        counting, heads_done = self._in_head, self._heads_done
        super().data_received(data)
        if self._refused:
            self._reject(431, "request has too many header fields", "too_many_headers")
        elif counting and self._in_head and self._heads_done == heads_done:
            # Only a read that lies wholly inside one head counts: a head that began inside
            # this read escapes the count by at most one read (256 KiB), so memory stays
            # bounded, and a request's body never counts against the next request's head.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_bytes:
                self._refused = True
                self._reject(431, f"request head exceeds {self.limits.max_bytes} bytes",
                             "headers_too_large")

    # --- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_fields:
            self._refused = True  # answered once the parser returns (see data_received)
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_timer()
        self._in_head = False
        self._heads_done += 1
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._head_fields = True, 0, 0
        if not self._refused:
            super().on_message_complete()

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
        self._refused = True
        if self._head_bytes or self.headers:  # a head was started: say why it is dropped
            self._reject(408, "request head not received in time", "request_timeout")
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


def head_limited_protocol(limits: HeadLimits) -> type[HeadLimitedProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    return type("HeadLimitedProtocol", (HeadLimitedProtocol,), {"limits": limits})
