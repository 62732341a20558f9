"""The alert webhook: events (budget thresholds crossed, spend guard opened or closed) POSTed
as JSON to one operator-configured URL, off the request path.

`submit` never waits: it puts the event on a bounded queue, or drops it with a log line when
the queue is full (a webhook that is down must not grow memory or slow requests). One
background task sends the queue in order, each event retried with exponential backoff
(tenacity) up to `attempts` tries. The URL may carry a token (chat webhooks do): it is never
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from spillgate.tasks import cancel_and_wait

log = logging.getLogger(__name__)
RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError)


class WebhookSender:
    def __init__(self, url: str, *, queue_size: int = 256, attempts: int = 5,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 timeout_s: float = 10.0) -> None:
        self._url = url
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def submit(self, event: dict[str, Any]) -> bool:
        """Queue `event` (stamped with the time); False when the queue is full."""
        try:
            self._queue.put_nowait({"at": time.time(), **event})
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("alert webhook queue full: dropped a %s event", event.get("kind"))
            return False

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._task = asyncio.create_task(self._run(), name="alert-webhook")

    async def aclose(self, drain_s: float = 2.0) -> None:
        """Give queued events `drain_s` to go out, then stop."""
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
            await cancel_and_wait(self._task)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
                self.sent += 1
            except Exception as exc:  # a webhook that stays down loses the event, not the node
                self.failed += 1
                log.warning("alert webhook gave up on a %s event after %d tries: %s",
                            event.get("kind"), self._attempts, type(exc).__name__)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: dict[str, Any]) -> None:
        if self._session is None:
            raise RuntimeError("webhook sender used before start()")
        body = orjson.dumps(event)
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_s, max=self._max_backoff_s),
            retry=retry_if_exception_type(RETRYABLE), reraise=True,
        ):
            with attempt:
                async with self._session.post(
                    self._url, data=body, headers={"content-type": "application/json"},
                ) as reply:
                    reply.raise_for_status()
