"""Stop working for a client that has gone away, non-stream requests included.

A streamed answer notices a departed client when writing fails (Starlette then closes the
relay). A non-stream request writes nothing until the answer is complete, so without a watcher
the upstream call — and the engine generating for it — would run to the end for nobody.
`cancelled_on_disconnect` watches the ASGI channel while the request is being served and
cancels the serving task when the client disconnects: the upstream connection is closed (the
engine drops the sequence) and the request's life settles as 499. Either way, and for a client
gone while its body was being read (api/hot.py's `read_body`), the route ends with
`ClientClosed` (499): counted as such, never logged as a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive

from spillgate.errors import ClientClosed


@contextlib.asynccontextmanager
async def cancelled_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Run the block; cancel it and raise ClientClosed if the client leaves first.
    Call it once the body has been read: the next ASGI message is then the disconnect."""
    current = asyncio.current_task()
    if current is None:  # pragma: no cover - always inside a task under an ASGI server
        yield
        return
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    watcher = asyncio.create_task(watch(), name="disconnect-watch")
    try:
        yield
    except asyncio.CancelledError:
        # Our own cancel becomes ClientClosed; anyone else's stays a cancellation.
        if gone and current.uncancel() == 0:
            raise ClientClosed("the client closed the connection") from None
        raise
    finally:
        watcher.cancel()
