"""Stopping a background task: the caller goes on only once the task's own cleanup is done
(a sampler's session, a clock's last period are closed after it)."""

from __future__ import annotations

import asyncio

from spillgate.tasks import cancel_and_wait


async def test_returns_only_after_the_task_has_cleaned_up() -> None:
    cleaned: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            cleaned.append("done")

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)  # let it start
    await cancel_and_wait(task)
    assert cleaned == ["done"]
    assert task.cancelled()


async def test_a_task_that_already_ended_or_none_is_nothing_to_stop() -> None:
    async def quick() -> int:
        return 1

    task = asyncio.create_task(quick())
    await task
    await cancel_and_wait(task)
    await cancel_and_wait(None)
    assert task.result() == 1


async def test_a_stopper_cancelled_while_it_waits_stays_cancelled() -> None:
    """The caller's own cancellation is not the stopped task's: it must reach the caller."""
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # cleanup that takes a while

    async def stopper() -> str:
        await cancel_and_wait(worker)
        return "went on"

    worker = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0)  # outer now waits for the worker's cleanup
    outer.cancel()
    release.set()
    await asyncio.gather(outer, worker, return_exceptions=True)
    assert outer.cancelled()
