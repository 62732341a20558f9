"""The disconnect watcher (api/disconnect.py): a client gone mid-request cancels the work and
ends as ClientClosed (499); a request answered quickly never starts a watcher."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spillgate.api.disconnect import WATCH_AFTER_S, cancelled_on_disconnect
from spillgate.errors import ClientClosed


class Channel:
    """An ASGI receive channel: blocks until the client leaves, counts the calls."""

    def __init__(self) -> None:
        self.left = asyncio.Event()
        self.calls = 0

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        await self.left.wait()
        return {"type": "http.disconnect"}


async def test_a_client_gone_before_the_watcher_starts_still_cancels_the_work() -> None:
    channel = Channel()
    channel.left.set()  # gone at once: noticed when the watcher starts
    finished = False
    with pytest.raises(ClientClosed):
        async with cancelled_on_disconnect(channel.receive):
            await asyncio.sleep(30)
            finished = True
    assert not finished and channel.calls == 1


async def test_a_client_leaving_mid_request_cancels_it_at_once() -> None:
    channel = Channel()
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        async with cancelled_on_disconnect(channel.receive):
            await asyncio.sleep(30)

    serving = asyncio.create_task(serve())
    await asyncio.sleep(3 * WATCH_AFTER_S)  # the watcher is waiting on the channel now
    left_at = loop.time()
    channel.left.set()
    with pytest.raises(ClientClosed):
        await serving
    assert loop.time() - left_at < WATCH_AFTER_S


async def test_requests_answered_quickly_never_read_the_channel() -> None:
    channel = Channel()

    async def quick() -> int:
        async with cancelled_on_disconnect(channel.receive):
            await asyncio.sleep(0)
            return 1

    assert sum(await asyncio.gather(*(quick() for _ in range(200)))) == 200
    await asyncio.sleep(2 * WATCH_AFTER_S)
    assert channel.calls == 0


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    channel = Channel()

    async def serve() -> None:
        async with cancelled_on_disconnect(channel.receive):
            await asyncio.sleep(30)

    serving = asyncio.create_task(serve())
    await asyncio.sleep(2 * WATCH_AFTER_S)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
