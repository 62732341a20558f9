"""A response's head leaves in the same write as its first body bytes.

uvicorn writes a response's head the moment the app sends `http.response.start`, and the
body in a second write. On loopback each write is a syscall that also delivers the bytes and
wakes the client, so a plain answer cost two wake-ups where one does; on this 2-core VM
a write costs tens of microseconds (py-spy: uvicorn's `send` was a third of a passthrough's
CPU at one client). This transport, which the server's protocol hands its response cycles
in place of the socket's, holds a head back until the next write or, at the latest, the
loop's next turn, so a head whose body follows at once (every plain answer, a stream whose
first chunk is already read) goes out with it, and a head whose body is slow still leaves
within one turn of the loop. Every write passes through here, so order is kept.

Both servers use it: the node's (spillgate.api.http_limits, which adds the head limits) and
the llama.cpp engine's (`HeldHeadProtocol`), so a local plain answer also reaches the
gateway's client pool as one segment, one read and one wake-up of the gateway's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_PREFIX = b"HTTP/1.1 "
_INTERIM = b"1"  # 1xx (100 Continue) is answered at once: the client waits for it


class HeldHeadTransport:
    """The socket's transport, holding a response head back for at most one loop turn."""

    __slots__ = ("_held", "_loop", "_real")

    def __init__(self, real: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._real, self._loop = real, loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._real.write(held + data)
        elif data.startswith(_HEAD_PREFIX) and data[9:10] != _INTERIM:
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._real.write(data)

    def write_whole(self, data: bytes) -> None:
        """A whole answer, head and body: written at once (after anything held)."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._real.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._real.is_closing():
                self._real.write(held)

    def close(self) -> None:
        self._flush()
        self._real.close()

    def abort(self) -> None:
        self._held = None
        self._real.abort()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport's surface, unchanged
        return getattr(self._real, name)


class HeldHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a `HeldHeadTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Cycles and the protocol write through it; flow control keeps the socket's own.
        self.transport = HeldHeadTransport(transport, self.loop)  # type: ignore[assignment]
