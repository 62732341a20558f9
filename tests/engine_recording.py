"""A model that records what the llama.cpp decode loop asks of it, for scheduler tests.

`RecordingModel` has the slice of LlamaModel the Scheduler uses. It keeps each slot's KV
stream as the list of tokens it holds, by position, as llama.cpp would: a decode row must
continue its sequence (position = cells held), `keep_prefix` cuts a stream, `forget` empties
it. Every call lands in `events`, in order (all of them come from the decode thread), and
anything llama.cpp would refuse lands in `violations`. `run` drives a real Scheduler through
its public API with clients that arrive, read and leave as a list of `Request`s says.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from spillgate.engines.llamacpp.metrics import EngineMetrics
from spillgate.engines.llamacpp.model import ContextShape, SamplingParams
from spillgate.engines.llamacpp.scheduler import Job, Scheduler, SchedulerConfig
from spillgate.engines.llamacpp.tickets import TicketCancelled
from spillgate.errors import ApiError

Row = tuple[int, int, int, bool]
Event = tuple[str, Any]
FIRST_SAMPLED = 50_000  # sampled tokens count up from here: never a prompt token


@dataclass
class RecordingModel:
    max_batch: int
    step_s: float = 0.0  # how long a decode takes: lets arrivals land between steps
    fail_at: int | None = None  # this decode call (1, 2, ...) fails, its rows not applied
    pause_at: int | None = None  # this decode call waits for `resume` once it is done
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    decodes: int = 0
    events: list[Event] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    kv: dict[int, list[int]] = field(default_factory=dict)
    _samplers: itertools.count[int] = field(default_factory=itertools.count)
    _tokens: itertools.count[int] = field(
        default_factory=lambda: itertools.count(FIRST_SAMPLED))
    _rows: list[Row] = field(default_factory=list)

    @property
    def shape(self) -> ContextShape:
        return ContextShape(n_ctx=512, n_seq=self.max_batch, n_batch=512, n_threads=1)

    def new_sampler(self, params: SamplingParams) -> int:
        sampler = next(self._samplers)
        self.events.append(("admit", sampler))
        return sampler

    def decode(self, rows: list[Row]) -> int:
        self.decodes += 1
        self.events.append(("decode", list(rows)))
        if self.decodes == self.fail_at:
            return -1  # llama.cpp rolls a failed batch's cells back
        for token, position, seq, _logits in rows:
            held = self.kv.setdefault(seq, [])
            if position != len(held):
                self.violations.append(f"slot {seq}: a row at {position} after {len(held)} cells")
            self.kv[seq] = [*held[:position], token]
        self._rows = list(rows)
        time.sleep(self.step_s)
        if self.decodes == self.pause_at:
            self.paused.set()
            self.resume.wait(10)
        return 0

    def sample(self, sampler: int, batch_index: int) -> int:
        _token, _position, slot, logits = self._rows[batch_index]
        if not logits or any(row[2] == slot for row in self._rows[batch_index + 1:]):
            self.violations.append(f"slot {slot}: sampled row {batch_index}, not its last "
                                   "row with logits")
        token = next(self._tokens)
        self.events.append(("sample", (sampler, tuple(self.kv[slot]), token)))
        return token

    def keep_prefix(self, seq: int, n_tokens: int) -> bool:
        self.events.append(("keep", (seq, n_tokens)))
        held = self.kv.setdefault(seq, [])
        if n_tokens > len(held):
            self.violations.append(f"slot {seq}: keep {n_tokens} of {len(held)} cells")
        self.kv[seq] = held[:n_tokens]
        return True

    def forget(self, seq: int) -> None:
        self.events.append(("keep", (seq, 0)))
        self.kv[seq] = []

    def free_sampler(self, sampler: int) -> None:
        self.events.append(("free", sampler))

    def is_end_of_generation(self, token: int) -> bool:
        return False

    def piece(self, token: int) -> bytes:
        return b"x"

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        pass


@dataclass(frozen=True)
class Request:
    prompt: tuple[int, ...]
    max_tokens: int
    delay_ms: int = 0
    cancel_after: int | None = None  # chunks read before the client leaves; None: to the end
    cancel_at_ms: int | None = None  # or the client leaves this long after it asked
    cancel_when_paused: bool = False  # or once the model pauses (RecordingModel.pause_at)
    after: int | None = None  # asks only once this request (an index) has ended: delay_ms
    # then counts from that end (a closed-loop client asking again)


async def _drive(scheduler: Scheduler, model: RecordingModel, wanted: list[Request]) -> None:
    loop = asyncio.get_running_loop()
    ended = [asyncio.Event() for _ in wanted]

    async def client(index: int, request: Request) -> None:
        try:
            await ask(request)
        finally:
            ended[index].set()

    async def ask(request: Request) -> None:
        if request.after is not None:
            await ended[request.after].wait()
        await asyncio.sleep(request.delay_ms / 1000)
        ticket = scheduler.submit(Job(list(request.prompt), request.max_tokens), loop)
        if request.cancel_at_ms is not None:
            loop.call_later(request.cancel_at_ms / 1000, ticket.cancel)
        if request.cancel_when_paused:  # the decode thread waits until the client has left
            await loop.run_in_executor(None, model.paused.wait, 10)
            ticket.cancel()
            model.resume.set()
        read = 0
        try:
            while True:
                if request.cancel_after is not None and read >= request.cancel_after:
                    ticket.cancel()
                    return
                chunk = await ticket.next()
                read += 1
                if chunk.finish_reason is not None:
                    return
        except (TicketCancelled, ApiError):  # left, or the engine failed the request
            return

    await asyncio.wait_for(asyncio.gather(*(client(i, r) for i, r in enumerate(wanted))), 30)


def run(wanted: list[Request], *, max_batch: int = 4, prefill_chunk: int = 64,
        step_s: float = 0.0005, reuse_prefix: bool = True, fail_at: int | None = None,
        pause_at: int | None = None, refill_wait_s: float = 0.0) -> RecordingModel:
    model = RecordingModel(max_batch, step_s, fail_at=fail_at, pause_at=pause_at)
    config = SchedulerConfig(max_batch=max_batch, max_queue=64, prefill_chunk=prefill_chunk,
                             reuse_prefix=reuse_prefix, refill_wait_s=refill_wait_s)
    scheduler = Scheduler(model, EngineMetrics(64, max_batch), config)  # type: ignore[arg-type]
    scheduler.start()
    try:
        asyncio.run(_drive(scheduler, model, wanted))
    finally:
        scheduler.stop()
    return model


def slots_by_sampler(events: list[Event]) -> dict[int, int]:
    """Which slot each admitted request took: admitting claims the slot's stream (a keep or
    a forget of it) just before the request's sampler is made."""
    return {value: events[i - 1][1][0] for i, (kind, value) in enumerate(events)
            if kind == "admit"}
