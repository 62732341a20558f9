"""The decode loop's batches are what llama.cpp can run in one pass.

With a KV stream per sequence, llama.cpp splits a batch into ubatches that take sequences only
in increasing, consecutive ids: rows out of slot order, or busy slots with gaps, cost another
pass over every weight per step (35-92% slower steps measured by scripts/batch_order.py).
These tests drive the real Scheduler through its public API with generated arrivals, lengths,
prompt chunking and cancellations, over a model that records every call, and check:
  - every batch lists its rows by slot, each sequence's rows together and in position order;
  - every request is admitted into the lowest free slot, so busy slots stay contiguous.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spillgate.engines.llamacpp.metrics import EngineMetrics
from spillgate.engines.llamacpp.model import ContextShape, SamplingParams
from spillgate.engines.llamacpp.scheduler import Job, Scheduler, SchedulerConfig
from spillgate.engines.llamacpp.tickets import TicketCancelled

Row = tuple[int, int, int, bool]


@dataclass
class RecordingModel:
    """The slice of LlamaModel the scheduler uses; every call lands in `events`, in order
    (all of them come from the decode thread)."""

    max_batch: int
    step_s: float = 0.0  # how long a decode takes: lets arrivals land between steps
    events: list[tuple[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def shape(self) -> ContextShape:
        return ContextShape(n_ctx=512, n_seq=self.max_batch, n_batch=512, n_threads=1)

    def new_sampler(self, params: SamplingParams) -> int:
        sampler = next(self._ids)
        self.events.append(("admit", sampler))
        return sampler

    def decode(self, rows: list[Row]) -> int:
        self.events.append(("decode", list(rows)))
        time.sleep(self.step_s)
        return 0

    def sample(self, sampler: int, batch_index: int) -> int:
        self.events.append(("sample", (sampler, batch_index)))
        return 42

    def forget(self, seq: int) -> None:
        self.events.append(("forget", seq))

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
    prompt_tokens: int
    max_tokens: int
    delay_ms: int
    cancel_after: int | None  # chunks read before the client leaves; None: reads to the end


requests = st.lists(st.builds(
    Request, prompt_tokens=st.integers(1, 40), max_tokens=st.integers(1, 10),
    delay_ms=st.integers(0, 6), cancel_after=st.none() | st.integers(0, 3)),
    min_size=1, max_size=14)


async def _drive(scheduler: Scheduler, wanted: list[Request]) -> None:
    loop = asyncio.get_running_loop()

    async def client(request: Request) -> None:
        await asyncio.sleep(request.delay_ms / 1000)
        job = Job(list(range(1, request.prompt_tokens + 1)), request.max_tokens)
        ticket = scheduler.submit(job, loop)
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
        except TicketCancelled:
            return

    await asyncio.wait_for(asyncio.gather(*(client(r) for r in wanted)), 30)


def _run(max_batch: int, prefill_chunk: int, wanted: list[Request], step_s: float = 0.0005,
         ) -> list[tuple[str, Any]]:
    model = RecordingModel(max_batch, step_s)
    config = SchedulerConfig(max_batch=max_batch, max_queue=64, prefill_chunk=prefill_chunk)
    scheduler = Scheduler(model, EngineMetrics(64, max_batch), config)  # type: ignore[arg-type]
    scheduler.start()
    try:
        asyncio.run(_drive(scheduler, wanted))
    finally:
        scheduler.stop()
    return model.events


def _slots_by_sampler(events: list[tuple[str, Any]]) -> dict[int, int]:
    """Which slot each admitted request held: from the rows it sampled, or, for one cancelled
    before its first token, from the forget that freed its slot (the scheduler forgets a
    slot, then frees that sequence's sampler)."""
    slots: dict[int, int] = {}
    last_rows: list[Row] = []
    for i, (kind, value) in enumerate(events):
        if kind == "decode":
            last_rows = value
        elif kind == "sample":
            sampler, row = value
            slots[sampler] = last_rows[row][2]
        elif kind == "free" and events[i - 1][0] == "forget":
            slots.setdefault(value, events[i - 1][1])
    return slots


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_batch=st.integers(2, 4), prefill_chunk=st.integers(1, 48), wanted=requests)
def test_rows_go_out_by_slot_and_requests_take_the_lowest_free_slot(
        max_batch: int, prefill_chunk: int, wanted: list[Request]) -> None:
    events = _run(max_batch, prefill_chunk, wanted)
    batches = [rows for kind, rows in events if kind == "decode"]
    if any(r.cancel_after != 0 for r in wanted):  # someone waited for a token
        assert batches, "nothing was decoded"
    for rows in batches:
        keys = [(seq, position) for _token, position, seq, _logits in rows]
        assert keys == sorted(keys), f"rows out of slot order: {keys}"
        assert len(set(keys)) == len(keys)

    slots = _slots_by_sampler(events)
    busy: dict[int, int] = {}  # sampler -> slot, for admitted requests not yet freed
    for kind, value in events:
        if kind == "admit":
            slot = slots[value]
            free = set(range(max_batch)) - set(busy.values())
            assert slot == min(free), f"admitted into slot {slot}, lowest free was {min(free)}"
            busy[value] = slot
        elif kind == "free":
            busy.pop(value)
    assert not busy, "a request's slot was never freed"


def test_a_request_admitted_beside_running_ones_takes_the_lowest_gap() -> None:
    """Slots 0-3 busy; the requests in slot 1 and then slot 2 leave; the next request takes
    slot 1 (the last slot freed would be 2), so slots 0, 1 and 3 run as two passes at most."""
    wanted = [Request(4, 30, 0, None), Request(4, 2, 0, None), Request(4, 4, 0, None),
              Request(4, 30, 0, None), Request(4, 5, 20, None)]
    events = _run(4, 64, wanted, step_s=0.002)
    slots = _slots_by_sampler(events)
    admitted = [value for kind, value in events if kind == "admit"]
    assert [slots[s] for s in admitted[:4]] == [0, 1, 2, 3]
    assert slots[admitted[4]] == 1
