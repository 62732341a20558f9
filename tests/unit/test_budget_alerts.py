"""Budget alert thresholds, and the webhook that carries alerts out (a real HTTP server on
loopback that fails on purpose)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from spillgate.alerts import WebhookSender
from spillgate.tenancy.budget_alerts import BudgetAlerts

D = Decimal


def test_each_threshold_fires_once_on_the_way_up_and_rearms_on_a_new_period() -> None:
    alerts = BudgetAlerts([0.8, 1.0])
    used, crossed = alerts.update("k", "day", D("10"), D("5"))
    assert used == D("0.5") and crossed == []
    used, crossed = alerts.update("k", "day", D("10"), D("1.5"))
    assert used == D("0.85") and [a.threshold for a in crossed] == [D("0.8")]
    assert alerts.update("k", "day", D("10"), D("1"))[1] == []  # still past 0.8: no repeat
    assert [a.threshold for a in alerts.update("k", "day", D("10"), D("0"))[1]] == [D("1.0")]
    assert alerts.counts()[("day", "0.8")] == 1 and alerts.counts()[("day", "1")] == 1
    assert alerts.update("k", "day", D("10"), D("10"))[1] == []  # a new day: re-armed
    assert alerts.counts()[("day", "0.8")] == 0
    assert [a.threshold for a in alerts.update("k", "day", D("10"), D("0"))[1]] == [
        D("0.8"), D("1.0")]  # one jump past both raises both


@given(st.lists(st.integers(0, 1200), min_size=1, max_size=30))
def test_alerts_raised_equal_the_upward_crossings(remaining_cents: list[int]) -> None:
    """Recount: a threshold fires each time the used share goes from below it to at or
    above it, whatever the sequence of remaining amounts ($10 budget)."""
    alerts = BudgetAlerts([0.8, 1.0])
    fired: list[Decimal] = []
    for cents in remaining_cents:
        fired += [a.threshold for a in alerts.update("k", "month", D(10), D(cents) / 100)[1]]
    expected: list[Decimal] = []
    previous = D(0)
    for cents in remaining_cents:
        used = (D(10) - D(cents) / 100) / 10
        expected += [t for t in (D("0.8"), D("1.0")) if previous < t <= used]
        previous = used
    assert fired == expected


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """A webhook receiver that answers 500 to the first two posts, then 204."""
    received: list[dict[str, Any]] = []
    statuses: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        status = 500 if len(statuses) < 2 else 204
        statuses.append(status)
        if status == 204:
            received.append(await request.json())
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received, statuses
    finally:
        await runner.cleanup()


async def test_webhook_retries_with_backoff_until_delivered() -> None:
    async with receiver() as (url, received, statuses):
        sender = WebhookSender(url, attempts=5, backoff_s=0.01, max_backoff_s=0.05)
        await sender.start()
        try:
            assert sender.submit({"kind": "budget_threshold", "key_id": "k",
                                  "threshold": "0.8"})
            for _ in range(200):
                if received:
                    break
                await asyncio.sleep(0.02)
        finally:
            await sender.aclose()
    assert statuses == [500, 500, 204]
    assert received[0]["kind"] == "budget_threshold" and received[0]["key_id"] == "k"
    assert "at" in received[0] and sender.sent == 1 and sender.failed == 0


async def test_a_full_queue_drops_instead_of_waiting() -> None:
    sender = WebhookSender("http://127.0.0.1:9/unreachable", queue_size=2)  # never started
    began = time.perf_counter()
    accepted = [sender.submit({"kind": "x", "n": i}) for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert sender.dropped == 3
    assert time.perf_counter() - began < 1.0  # submit returns at once (a loose bound)


async def test_webhook_gives_up_after_its_attempts() -> None:
    sender = WebhookSender("http://127.0.0.1:9/closed-port", attempts=2, backoff_s=0.01,
                           max_backoff_s=0.01, timeout_s=1.0)
    await sender.start()
    try:
        sender.submit({"kind": "budget_threshold"})
        for _ in range(200):
            if sender.failed:
                break
            await asyncio.sleep(0.02)
    finally:
        await sender.aclose()
    assert sender.failed == 1 and sender.sent == 0
