"""Faults the fake provider injects on demand, and the wire-level tricks that produce them.

A Fault is one JSON object (POST /_fake/faults) whose fields combine freely:

    path            only requests to this path (default: every API path)
    count           the next N matching requests (default: until cleared)
    latency_ms      fixed delay before anything is answered
    status          answer this HTTP status (429, 500, 502, 503 …) with a provider-shaped error
    retry_after_s   Retry-After header for `status` (429 gets 1 s unless told otherwise)
    reset           close the connection with a TCP reset, without answering
    cut_after       send this many stream events (or half a plain body), then drop the
                    connection: no [DONE], no message_stop
    trickle_ms      delay between stream events
    ttft_ms         delay between the response headers and the first stream event

Every active fault matching a request applies to it (so a standing 20 ms latency and a one-off
429 combine), and each one spends one of its `count`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, fields, replace
from typing import Any

from aiohttp import web


class FaultSpecError(ValueError):
    """A fault description with unknown fields or wrong types."""


@dataclass(frozen=True, slots=True)
class Fault:
    path: str | None = None
    count: int | None = None
    latency_ms: float = 0.0
    status: int | None = None
    retry_after_s: float | None = None
    reset: bool = False
    cut_after: int | None = None
    trickle_ms: float = 0.0
    ttft_ms: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise FaultSpecError("a fault is a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise FaultSpecError(f"unknown fault fields: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise FaultSpecError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def merged(self, other: Fault) -> Fault:
        """This fault with `other`'s effects added (first one set wins per field)."""
        return Fault(
            latency_ms=self.latency_ms + other.latency_ms,
            status=self.status if self.status is not None else other.status,
            retry_after_s=(self.retry_after_s if self.retry_after_s is not None
                           else other.retry_after_s),
            reset=self.reset or other.reset,
            cut_after=self.cut_after if self.cut_after is not None else other.cut_after,
            trickle_ms=self.trickle_ms + other.trickle_ms,
            ttft_ms=self.ttft_ms + other.ttft_ms,
        )

    @property
    def shapes_stream(self) -> bool:
        """Whether stream events must be written one by one (else one write is enough)."""
        return self.cut_after is not None or self.trickle_ms > 0 or self.ttft_ms > 0


NO_FAULT = Fault()


class FaultBook:
    """The active faults; `take` picks those matching a request and spends their counts."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def set(self, faults: list[Fault]) -> None:
        self._faults = list(faults)

    def add(self, faults: list[Fault]) -> None:
        self._faults.extend(faults)

    def active(self) -> list[Fault]:
        return list(self._faults)

    def take(self, path: str) -> Fault:
        if not self._faults:  # the hot path of a benchmark upstream
            return NO_FAULT
        effect = NO_FAULT
        kept: list[Fault] = []
        for fault in self._faults:
            if fault.path is not None and fault.path != path:
                kept.append(fault)
                continue
            effect = effect.merged(fault)
            if fault.count is None:
                kept.append(fault)
            elif fault.count > 1:
                kept.append(replace(fault, count=fault.count - 1))
        self._faults = kept
        return effect


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def reset_connection(request: web.Request) -> None:
    """Drop the client's connection with a TCP RST (SO_LINGER 0), as a crashed upstream or a
    middlebox would: the client sees 'connection reset', not a polite close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def drop_connection(request: web.Request) -> None:
    """Hang up after what was written so far is flushed (FIN, not RST): the client gets the
    first part of the answer, then an unexpected end, as when a stream is cut midway."""
    if request.transport is not None:
        request.transport.close()


def retry_after_header(fault: Fault) -> dict[str, str]:
    seconds = fault.retry_after_s
    if seconds is None and fault.status == 429:
        seconds = 1.0
    return {} if seconds is None else {"retry-after": f"{seconds:g}"}
