"""Background tasks (samplers, clocks, supervisors, schedulers): how one is stopped."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and return once it has ended (its `finally` blocks have run), so what it
    used can be closed next; the CancelledError it ends with is not an error. None: nothing
    to stop. A caller cancelled while it waits is still cancelled: only the task's own
    CancelledError is swallowed, or a shutdown that cancels its stopper would go on."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if me is not None and me.cancelling():
            raise
