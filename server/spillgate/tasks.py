"""Background tasks (samplers, clocks, supervisors, schedulers): how one is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and return once it has ended (its `finally` blocks have run), so what it
    used can be closed next; the CancelledError it ends with is not an error. None: nothing
    to stop."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
