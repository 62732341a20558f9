"""The batch scheduler: batch lines run on local capacity that live traffic leaves idle.

Every `poll_s` it reads the same capacity view the router reads (each local engine's
requests in flight, the gateway's own plus other clients' as last scraped; its readiness,
a full queue, a spill verdict such as KV-cache pressure) and takes the live load as that
in-flight count less its own batch lines. Lines start, at most `concurrency` at once, only
while the live load is at most `live_inflight_max` and has been for `resume_after_s`, and
no engine is saturated. When live load returns it starts nothing more and, with `preempt`,
cancels the lines running (they free the engine at once and go back to pending, retried
later under the same ledger row): backing off takes one poll.

Lines never go to a paid API (they are pinned to the local tier) unless their batch asked
for it in its metadata and its window closes within `spill_margin_s`; those lines are then
served on the normal route, where sensitive ones stay local and paid calls are reserved
against the key's budget.

A batch whose key is revoked gets no new line claimed; the lines it has running are stopped
like a cancelled batch's, and it ends `failed` (lifecycle.py).

Exactly once: a line is claimed in the database before it runs; its ledger row has a fixed
id, is flushed to the database before the line is marked done, and a crash leaves the line
`running`, which the next start puts back to pending (store.recover): a retry overwrites
the same ledger row, so nothing is lost and nothing is billed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from spillgate import service
from spillgate.batches import lifecycle
from spillgate.batches.runner import LineResult, run_line
from spillgate.batches.store import BatchStore, ClaimedLine
from spillgate.errors import describe
from spillgate.ledger.schema import api_keys
from spillgate.settings import BatchSettings

log = logging.getLogger(__name__)
IDLE_CLAIM_S = 1.0  # with nothing to claim, look again this often (or when woken)
# With no batch in progress anywhere, look this seldom: a batch created through this node
# wakes the scheduler at once; one created through another replica waits at most this long.
IDLE_LOOK_S = 30.0
ADVANCE_S = 1.0  # expire / finalize batches at least this often
# Resting, the loop only keeps the live-load history fresh (so a batch created right after a
# burst still waits `resume_after_s`): a look this often, not every `poll_s`. Polling every
# 20 ms at rest cost an idle node 15 ms of CPU a second, taken from the engine's threads.
REST_LOOK_S = 0.25
RECOVER_GRACE_S = 600.0  # a line running this long on another replica is taken over


class BatchScheduler:
    def __init__(self, node: service.Node, store: BatchStore, config: BatchSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._node = node
        self._store = store
        self._config = config
        self._clock = clock
        self._running: dict[asyncio.Task[None], ClaimedLine] = {}
        self._busy_at = float("-inf")  # when live load was last over the limit
        self._next_claim = 0.0
        self._next_advance = 0.0
        self._had_room = False
        self._resting = False  # no batch in progress: see _rest
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._nudged = asyncio.Event()  # wake() or stop(): end the loop's pause now
        self.preempted = 0  # lines cancelled because live traffic came back

    # --- lifespan -------------------------------------------------------------------------
    async def start(self) -> None:
        recovered = await self._store.recover(self._store.ledger.node_id, RECOVER_GRACE_S)
        if recovered:
            log.warning("%d batch lines left running by a previous process will be retried",
                        recovered)
        advanced = await lifecycle.advance(self._store.ledger)
        if not advanced.active:
            self._rest(self._clock())
        self._task = asyncio.create_task(self._loop(), name="batch-scheduler")

    def _rest(self, now: float) -> None:
        """No batch in progress: no database work until woken or IDLE_LOOK_S from now."""
        self._resting = True
        self._next_claim = self._next_advance = now + IDLE_LOOK_S

    async def stop(self) -> None:
        """Let the current round finish, then stop the loop and the lines running.

        Not `cancel()` on the loop: a cancellation landing inside a round's transaction made
        SQLAlchemy drop the aiosqlite connection without a ROLLBACK, and that connection,
        left open in aiosqlite's thread, kept SQLite's write lock: the next writer waited
        out busy_timeout and failed with `database is locked` (the flaky batch tests)."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            self._nudged.set()
            await task
        await self._cancel_running()

    def wake(self) -> None:
        """New work (a batch was created or cancelled): look now, not in IDLE_CLAIM_S."""
        self._resting = False
        self._next_claim = self._next_advance = 0.0
        self._nudged.set()

    @property
    def running(self) -> int:
        return len(self._running)

    # --- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._tick()
            except Exception as exc:  # the database away a moment: keep going
                log.error("batch scheduler round failed: %s", describe(exc))
            pause = max(self._config.poll_s, REST_LOOK_S) if self._resting else self._config.poll_s
            with contextlib.suppress(TimeoutError):  # sleep, or look (or stop) at once
                async with asyncio.timeout(pause):
                    await self._nudged.wait()
            self._nudged.clear()

    async def _tick(self) -> None:
        now = self._clock()
        room = self._room(now)
        if room and not self._had_room and not self._resting:
            self._next_claim = 0.0  # idle again: claim now, not at the next idle look
        self._had_room = room
        if not room and self._config.preempt and self._local_running():
            await self._cancel_running(local_only=True)
        if now >= self._next_advance:
            self._next_advance = now + ADVANCE_S
            advanced = await lifecycle.advance(self._store.ledger)
            if advanced.ended:
                self._next_claim = 0.0
            # Stopped lines go back to pending, which the next round marks; a batch that
            # became finalizing gets its files on the next round.
            if await self._cancel_batches(advanced.stopping) or advanced.finalizing:
                self._next_advance = 0.0
            # Not when woken during this round: the batch that woke it may be newer than
            # what `advance` read.
            if not advanced.active and not self._running and not self._nudged.is_set():
                self._rest(now)
                return
            self._resting = False
        free = self._config.concurrency - len(self._running)
        if free <= 0 or now < self._next_claim:
            return
        spill_from = self._store.ledger.now() + timedelta(seconds=self._config.spill_margin_s)
        lines = await self._store.claim(free, self._store.ledger.node_id,
                                        spill_from=spill_from, spill_only=not room)
        if not lines:
            self._next_claim = now + IDLE_CLAIM_S
        for line in lines:
            task = asyncio.create_task(self._run(line), name=f"batch-line-{line.request_id}")
            self._running[task] = line
            task.add_done_callback(self._running.pop)

    def _room(self, now: float) -> bool:
        """Whether live traffic leaves the local engines idle enough for batch lines."""
        views = self._node.capacity()
        ours = self._local_running()
        live = sum(v.inflight for v in views.values()) - ours
        saturated = any(v.queue_full or v.spill_reason for v in views.values())
        if live > self._config.live_inflight_max or saturated:
            self._busy_at = now
        ready = any(v.ready for v in views.values())
        return ready and now - self._busy_at >= self._config.resume_after_s

    def _local_running(self) -> int:
        return sum(1 for line in self._running.values() if not line.spill)

    async def _cancel_running(self, *, local_only: bool = False) -> None:
        tasks = [t for t, line in self._running.items() if not (local_only and line.spill)]
        self.preempted += len(tasks)
        await _cancel(tasks)

    async def _cancel_batches(self, batch_ids: frozenset[str]) -> bool:
        """Stop the running lines of cancelled batches and of revoked keys' batches (they go
        back to pending, which the next round marks cancelled or aborted)."""
        tasks = [t for t, line in self._running.items() if line.batch_id in batch_ids]
        await _cancel(tasks)
        return bool(tasks)

    # --- one line -------------------------------------------------------------------------
    async def _run(self, line: ClaimedLine) -> None:
        try:
            result = await run_line(self._node, line, await self._local_only(line))
        except asyncio.CancelledError:  # preempted or shutting down: retried later
            await asyncio.shield(self._store.release(line, failed=False))
            raise
        except Exception as exc:
            log.error("batch line %s failed: %s", line.request_id, describe(exc))
            await asyncio.shield(self._store.release(line, failed=True))
            return
        # Shielded: a preemption arriving now must not leave a served line `running`.
        await asyncio.shield(self._settle(line, result))

    async def _settle(self, line: ClaimedLine, result: LineResult) -> None:
        if result.wait_s is not None:  # rate limited or no local engine: later, uncounted
            self._next_claim = self._clock() + result.wait_s
            await self._store.release(line, failed=False)
            return
        if result.retryable and line.failures + 1 < self._config.max_failures:
            await self._store.release(line, failed=True)
            return
        # The ledger row is in the database before the line says done: a crash in between
        # retries the line, which rewrites the same row.
        await self._store.ledger.flush()
        state = "done" if result.ok else "failed"
        if not await self._store.finish(line, state, result.status_code, result.body):
            log.warning("batch line %s was finished by another attempt", line.request_id)
        self._next_advance = 0.0

    async def _local_only(self, line: ClaimedLine) -> bool:
        """The owner key's local_only policy; it matters only for a line that may spill."""
        if not line.spill or not line.owner:
            return False
        async with self._store.ledger.reading() as conn:
            flag = await conn.scalar(select(api_keys.c.local_only).where(
                api_keys.c.key_id == line.owner))
        return bool(flag)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
