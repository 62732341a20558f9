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
