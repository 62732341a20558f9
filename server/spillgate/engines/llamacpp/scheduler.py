"""Continuous batching: one decode thread owns the llama.cpp context and serves many requests.

Requests wait FIFO in a bounded queue (full → 429) and are admitted into one of `max_batch`
sequence slots as soon as one is free. Every step builds one `llama_batch` holding the next
token of each decoding sequence plus a bounded chunk of prompt tokens of newly admitted ones,
runs one `llama_decode`, and samples each sequence with its own C sampler chain. A request
never waits for, or is interrupted by, another one: it leaves its slot only when it finishes or
its client goes away, and then the slot is free at once.

Row order matters to llama.cpp. With a KV stream per sequence it splits a batch into
"ubatches" that take sequences only in increasing, consecutive ids; the first id out of order
or after a gap starts another ubatch, i.e. another pass over all the weights. So the rows go
out sorted by slot, and a new request takes the lowest free slot, which keeps busy slots
contiguous. Sorted 0,1,2,3 four rows are one pass; in admission order 3,2,1,0 they were four,
and a step took 37% (bundled Q4_1) to 91% (IQ4_NL) longer (scripts/batch_order.py).

A finished request leaves its KV cells in its slot: the next request there computes only
the part of its prompt past the prefix they share (prefix.py).

Refill: a request is admitted only between decodes, and a client that sends its next request
as soon as one ends (an agent loop, a batch runner, the cascade) gets it here 2-4 ms after
the last chunk left: just after the next decode began, so it waited a whole step in the
queue (a third of its time to first token at 4 streams). After a step that finished a
request, while others still decode and nothing waits, the thread waits up to
`refill_wait_s` for a new arrival before decoding again (Triton's dynamic batcher has the
same kind of queue delay). When nothing comes that is all it costs, once per finished
request; when something does, the slot is busy a step earlier.

Hand-off: once per step the thread hands every `Chunk` of that step to its `Outlet` in one go
(one wake-up per step, not one per token per request): in this process `LoopOutlet` (one
`loop.call_soon_threadsafe`), in a decode process of its own (decoder.py) one pipe message.
Cancelling is a flag the thread reads at the top of each step. Before the next `llama_decode`
the thread waits (at most `handoff_wait_s`) until the HTTP side has run the coroutines those
chunks woke: on a machine with as many cores as llama.cpp threads, HTTP work running *during*
a decode pre-empts one of llama.cpp's threads while the others spin at its barriers, so the
whole step waits for it; run between decodes, it costs only its own time. When the cores are
busy anyway, one llama.cpp thread (no barriers) beats several: the thread times every decode
and a `ThreadChooser` (threads.py) switches between `n_threads` and 1 by what it measures.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spillgate.engines.llamacpp.logprobs import TokenLogprob
from spillgate.engines.llamacpp.metrics import EngineMetrics
from spillgate.engines.llamacpp.model import LlamaModel
from spillgate.engines.llamacpp.prefix import SlotPrefixes
from spillgate.engines.llamacpp.textstream import TextStream
from spillgate.engines.llamacpp.threads import ThreadChooser
from spillgate.engines.llamacpp.tickets import (
    Chunk,
    Delivery,
    Job,
    LoopOutlet,
    Outlet,
    Slip,
    Ticket,
    TicketCancelled,
)
from spillgate.errors import ApiError, RateLimited, ServiceUnavailable

__all__ = ["Chunk", "Job", "Scheduler", "SchedulerConfig", "Ticket", "TicketCancelled"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Sequence:
    """Decode-thread state of one admitted request."""

    ticket: Slip
    slot: int
    sampler: Any
    text: TextStream
    max_tokens: int
    fed: int = 0  # prompt tokens already in the KV cache
    cached: int = 0  # of those, found in the slot at admission (prefix reuse)
    decoded: list[int] = field(default_factory=list)  # generated tokens in the KV cache
    generated: int = 0
    last: int = -1
    first_token_at: float | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent

    def take_logprobs(self) -> tuple[TokenLogprob, ...]:
        taken = tuple(self.logprobs)
        self.logprobs.clear()
        return taken

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.ticket.job.prompt)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_batch: int = 4
    max_queue: int = 32
    prefill_chunk: int = 128  # prompt tokens per step: bounds the stall of running streams
    handoff_wait_s: float = 0.002  # longest wait for the loop to take a step's chunks; 0: none
    adapt_threads: bool = False  # switch between n_threads and 1 by measured step time
    reuse_prefix: bool = True  # keep a slot's cells for the next request's shared prefix
    refill_wait_s: float = 0.004  # after a request finished: longest wait for the next one


class Scheduler:
    """Owns the decode thread; `submit` from the event loop, `start`/`stop` from the lifespan."""

    def __init__(self, model: LlamaModel, metrics: EngineMetrics, config: SchedulerConfig,
                 clock: Callable[[], float] = time.monotonic, outlet: Outlet | None = None,
                 ) -> None:
        self._model = model
        self._outlet: Outlet = outlet or LoopOutlet()
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: deque[Slip] = deque()
        self._active: list[_Sequence] = []
        self._free_slots = list(range(config.max_batch))  # a min-heap: lowest slot first
        self._prefixes = SlotPrefixes(model, config.max_batch, enabled=config.reuse_prefix)
        self._stopping = False
        self._refills_owed = 0  # requests finished in the last step, not yet replaced
        self._outbox: Delivery = []
        # llama.cpp runs one-token batches on `n_threads` and bigger ones on `n_threads_batch`:
        # one chooser each, as one stream and several (or a prompt) can want different counts
        most = model.shape.n_threads
        adapt = config.adapt_threads and most > 1
        self._threads = (ThreadChooser(most), ThreadChooser(most)) if adapt else None
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    @property
    def n_ctx(self) -> int:
        return self._model.shape.n_ctx

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def submit(self, job: Job, loop: asyncio.AbstractEventLoop) -> Ticket:
        """Queue a job (by priority, then arrival); raises RateLimited when `max_queue` jobs
        already wait."""
        if not self.alive:
            raise ServiceUnavailable("the llama.cpp decode loop is not running",
                                     code="engine_unavailable")
        ticket = Ticket(job, loop, self._clock())
        with self._cond:
            if len(self._pending) >= self._config.max_queue:
                self._metrics.rejected.inc()
                raise queue_full(self._config.max_queue)
        self.enqueue(ticket)
        return ticket

    def enqueue(self, slip: Slip) -> None:
        """Queue a slip whatever the queue's length (the decode process: its parent already
        applied `max_queue`)."""
        with self._cond:
            slip._on_cancel = self._cancel_waiting
            self._enqueue(slip)
            self._metrics.waiting.set(len(self._pending))
            self._cond.notify()

    async def metrics_text(self) -> bytes:
        return self._metrics.render()

    def _enqueue(self, ticket: Slip) -> None:
        """Behind every waiting job of the same or a more urgent priority (caller holds the
        lock). The common case, all priorities equal, is an append."""
        priority = ticket.job.priority
        if not self._pending or self._pending[-1].job.priority <= priority:
            self._pending.append(ticket)
            return
        index = next(i for i, t in enumerate(self._pending) if t.job.priority > priority)
        self._pending.insert(index, ticket)

    def _cancel_waiting(self, ticket: Slip) -> None:
        with self._cond:
            if ticket in self._pending:
                self._pending.remove(ticket)
                self._metrics.waiting.set(len(self._pending))
                self._metrics.aborted.inc()
            self._cond.notify()

    # ---- decode thread ----

    def _run(self) -> None:
        try:
            while self._wait_for_work():
                self._outlet.settle(self._config.handoff_wait_s)
                self._await_refill()
                self._step()
        except BaseException as exc:  # a native failure: fail every request, report unhealthy
            self.failure = exc
            log.exception("decode loop failed")
        finally:
            self._shutdown()

    def _wait_for_work(self) -> bool:
        with self._cond:
            while not self._stopping and not self._pending and not self._active:
                self._refills_owed = 0  # idle: no running stream to hold back
                self._cond.wait()
            if self._stopping:
                return False
            self._admit_pending()
            return True

    def _await_refill(self) -> None:
        """After a step that finished requests not yet replaced by arrivals: wait up to
        `refill_wait_s` for the next one (none waiting, a slot free, others decoding), then
        admit what came. Once: a replacement that does not come is not waited for again."""
        if not self._refills_owed:
            return
        with self._cond:
            if not self._pending and self._free_slots and self._active:
                self._cond.wait_for(lambda: bool(self._pending) or self._stopping,
                                    self._config.refill_wait_s)
            self._admit_pending()
            self._refills_owed = 0

    def _admit_pending(self) -> None:
        """Admit waiting requests into free slots (caller holds the lock)."""
        while self._pending and self._free_slots:
            self._admit(self._pending.popleft())
        self._metrics.waiting.set(len(self._pending))

    def _admit(self, ticket: Slip) -> None:
        job = ticket.job
        slot = heapq.heappop(self._free_slots)
        cached = self._prefixes.claim(slot, job.prompt)
        seq = _Sequence(ticket=ticket, slot=slot, fed=cached, cached=cached,
                        sampler=self._model.new_sampler(job.sampling),
                        text=TextStream(job.stops),
                        max_tokens=max(1, min(job.max_tokens, self.n_ctx - len(job.prompt))))
        self._active.append(seq)
        self._refills_owed = max(0, self._refills_owed - 1)
        self._metrics.running.set(len(self._active))
        self._metrics.queue_time.observe(self._clock() - ticket.arrived)

    def _step(self) -> None:
        for seq in [s for s in self._active if s.ticket.cancelled]:
            self._release(seq)
            self._metrics.aborted.inc()
        rows: list[tuple[int, int, int, bool]] = []
        to_sample: list[tuple[_Sequence, int]] = []
        takes = self._prefill_takes()
        for seq in sorted(self._active, key=_by_slot):  # one llama.cpp pass: see the module doc
            if not seq.prefilling:
                position = len(seq.ticket.job.prompt) + seq.generated - 1
                rows.append((seq.last, position, seq.slot, True))
                seq.decoded.append(seq.last)
                to_sample.append((seq, len(rows) - 1))
            elif takes.get(seq.slot, 0) > 0:
                self._add_prompt_rows(seq, rows, to_sample, takes[seq.slot])
        if not rows:
            return
        status = self._decode(rows)
        if status != 0:
            self._fail_all(ServiceUnavailable(f"llama_decode failed with status {status}",
                                              code="engine_decode_failed"))
            return
        for seq, row in to_sample:
            token = self._model.sample(seq.sampler, row)
            top = seq.ticket.job.logprobs
            if top is not None and not self._model.is_end_of_generation(token):
                seq.logprobs.append(self._model.logprobs(row, token, top))
            self._accept(seq, token)
        self._metrics.generation_tokens.inc(len(to_sample))
        self._flush_outbox()

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> int:
        if self._threads is None:  # --adapt-threads off (the default): nothing to time
            return self._model.decode(rows)
        began = time.perf_counter()
        status = self._model.decode(rows)
        single, batched = self._threads
        chooser = single if len(rows) == 1 else batched
        if chooser.observe(len(rows), time.perf_counter() - began) is not None:
            self._model.set_threads(single.in_force, batched.in_force)
        return status

    def _flush_outbox(self) -> None:
        """One hand-off per step for all sequences, not one per token per sequence."""
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._outlet.send(outbox)

    def _prefill_takes(self) -> dict[int, int]:
        """Prompt tokens each prefilling sequence feeds this step, by slot: the step's budget
        goes to the earliest admitted first."""
        takes: dict[int, int] = {}
        budget = self._config.prefill_chunk
        for seq in self._active:  # admission order
            if budget <= 0:
                break
            if seq.prefilling:
                takes[seq.slot] = min(budget, len(seq.ticket.job.prompt) - seq.fed)
                budget -= takes[seq.slot]
        return takes

    def _add_prompt_rows(self, seq: _Sequence, rows: list[tuple[int, int, int, bool]],
                         to_sample: list[tuple[_Sequence, int]], take: int) -> None:
        prompt = seq.ticket.job.prompt
        for position in range(seq.fed, seq.fed + take):
            rows.append((prompt[position], position, seq.slot, position == len(prompt) - 1))
        seq.fed += take
        if not seq.prefilling:
            to_sample.append((seq, len(rows) - 1))
            self._metrics.prompt_tokens.inc(len(prompt))  # with the cached part: counted
            self._metrics.prompt_tokens_cached.inc(seq.cached)  # together, as the prompt ends

    def _accept(self, seq: _Sequence, token: int) -> None:
        seq.generated += 1
        if seq.first_token_at is None:
            seq.first_token_at = self._clock()
            self._metrics.ttft.observe(seq.first_token_at - seq.ticket.arrived)
        if self._model.is_end_of_generation(token):
            self._finish(seq, "stop", seq.text.flush())
            return
        text = seq.text.feed(self._model.piece(token))
        if seq.text.stopped:
            self._finish(seq, "stop", text)
        elif seq.generated >= seq.max_tokens:
            self._finish(seq, "length", text + seq.text.flush())
        else:
            seq.last = token
            if text or seq.logprobs:
                self._outbox.append((seq.ticket, Chunk(text, logprobs=seq.take_logprobs())))

    def _finish(self, seq: _Sequence, reason: str, text: str) -> None:
        self._outbox.append((seq.ticket, Chunk(text, reason, len(seq.ticket.job.prompt),
                                               seq.generated, seq.take_logprobs(),
                                               cached_tokens=seq.cached)))
        self._metrics.success.labels(finish_reason=reason).inc()
        self._metrics.e2e.observe(self._clock() - seq.ticket.arrived)
        self._release(seq)
        if self._config.refill_wait_s > 0:
            self._refills_owed += 1

    def _release(self, seq: _Sequence, *, cells_known: bool = True) -> None:
        """Free the slot and the sequence's sampler. The slot's KV cells stay for the next
        request's shared prefix (prefix.py), unless a failed decode left them unknown."""
        self._active.remove(seq)
        if cells_known:
            self._prefixes.release(seq.slot, seq.ticket.job.prompt[:seq.fed] + seq.decoded)
        else:
            self._prefixes.drop(seq.slot)
        self._model.free_sampler(seq.sampler)
        heapq.heappush(self._free_slots, seq.slot)
        self._metrics.running.set(len(self._active))

    def _fail_all(self, error: ApiError) -> None:
        for seq in list(self._active):
            self._outbox.append((seq.ticket, error))
            self._release(seq, cells_known=False)
        self._flush_outbox()

    def _shutdown(self) -> None:
        error = ServiceUnavailable("the engine is shutting down", code="engine_unavailable")
        self._flush_outbox()
        self._fail_all(error)
        with self._cond:
            while self._pending:
                self._outbox.append((self._pending.popleft(), error))
            self._metrics.waiting.set(0)
        self._flush_outbox()


def _by_slot(seq: _Sequence) -> int:
    return seq.slot


def queue_full(max_queue: int) -> RateLimited:
    return RateLimited(f"engine queue is full ({max_queue} waiting); retry later",
                       code="engine_queue_full", retry_after_s=1.0)
