"""Stop working for a client that has gone away, non-stream requests included.

A non-stream request writes nothing until the answer is complete, and writing to a departed
client does not fail under uvicorn, so without a watcher the upstream call — and the engine
generating for it — would run to the end for nobody. A stream is watched the same way while
its chunks are sent (api/hot.py's `send_stream`).
`cancelled_on_disconnect` watches the ASGI channel while the request is being served and
cancels the serving task when the client disconnects: the upstream connection is closed (the
engine drops the sequence) and the request's life settles as 499. Either way, and for a client
gone while its body was being read (api/hot.py's `read_body`), the route ends with
`ClientClosed` (499): counted as such, never logged as a fault.

A watcher (a task waiting on `receive`) starts only for a request still being served after
WATCH_AFTER_S: most answers are done by then. One timer per event loop sweeps the requests
in flight, so a request that ends sooner costs a dict insert and removal instead of a task
created, stepped and cancelled. A client gone earlier is noticed when its watcher starts (the
ASGI server reports a disconnect that already happened at the next `receive`).
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import Final

from starlette.types import Receive

from spillgate.errors import ClientClosed

WATCH_AFTER_S: Final = 0.05


class cancelled_on_disconnect:  # lower case: used as `async with`, like the function it was
    """Run the block; cancel it and raise ClientClosed if the client leaves first.
    Enter it once the body has been read: the next ASGI message is then the disconnect."""

    __slots__ = ("__weakref__", "_gone", "_receive", "_sweeper", "_task", "_watcher")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = False
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._sweeper: _Sweeper | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        if self._task is not None:  # always, under an ASGI server
            self._sweeper = _Sweeper.of(asyncio.get_running_loop())
            self._sweeper.add(self)

    def start_watching(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(), name="disconnect-watch")

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        if self._task is not None:
            self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._sweeper is not None:
            self._sweeper.discard(self)
        if self._watcher is not None:
            self._watcher.cancel()
        # Our own cancel becomes ClientClosed; anyone else's stays a cancellation.
        if isinstance(exc, asyncio.CancelledError) and self._gone and self._task is not None \
                and self._task.uncancel() == 0:
            raise ClientClosed("the client closed the connection") from None


class _Sweeper:
    """Per event loop: the requests not watched yet, oldest first, and one timer that starts
    the watchers of those in flight for WATCH_AFTER_S."""

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = \
        weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[cancelled_on_disconnect, float] = {}  # entry -> when it began
        self._armed = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Sweeper:
        sweeper = cls._loops.get(loop)
        if sweeper is None:
            sweeper = cls._loops[loop] = cls(loop)
        return sweeper

    def add(self, entry: cancelled_on_disconnect) -> None:
        self._waiting[entry] = self._loop.time()
        if not self._armed:
            self._armed = True
            self._loop.call_later(WATCH_AFTER_S, self._sweep)

    def discard(self, entry: cancelled_on_disconnect) -> None:
        self._waiting.pop(entry, None)

    def _sweep(self) -> None:
        self._armed = False
        due = self._loop.time() - WATCH_AFTER_S
        while self._waiting:
            entry, began = next(iter(self._waiting.items()))
            if began > due:  # the rest are younger (insertion order)
                self._armed = True
                self._loop.call_at(began + WATCH_AFTER_S, self._sweep)
                return
            del self._waiting[entry]
            entry.start_watching()
