"""The decode loop in a process of its own: the HTTP process never shares a GIL with it.

In one process, the decode thread gives up the GIL around every C call (`llama_decode`, each
sampler, each detokenize) and must win it back from the event loop each time; while the loop
is busy writing SSE frames that costs up to the interpreter's switch interval (5 ms) per call,
several times per step. Here a child process owns the weights, the context and the
`Scheduler`; the HTTP process keeps a vocabulary-only model (tokenizing, the chat template)
and talks to the child over one `multiprocessing` pipe of pickled tuples:

    HTTP → decoder   ("submit", key, job, arrived) ("cancel", key) ("ack", step)
                     ("metrics", ask) ("rejected",) ("stop",)
    decoder → HTTP   ("ready",) ("failed", message) ("step", step, [(key, Chunk | Failure)])
                     ("metrics", ask, exposition bytes)

One "step" message per decode step carries every sequence's new text (never one message per
token per request); the HTTP side answers it with "ack" once the coroutines it woke have run,
which is what `--handoff-wait-ms` waits for before the next decode. `max_queue` (429) is
applied on the HTTP side, from the requests it has in flight, so a refusal is synchronous. The
child's metrics are the engine's metrics: /metrics asks the child for their exposition. The
child exits when the pipe closes (the HTTP process died) or its decode thread fails.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from spillgate.engines.llamacpp.metrics import EngineMetrics
from spillgate.engines.llamacpp.model import ContextShape, LlamaModel
from spillgate.engines.llamacpp.scheduler import Scheduler, SchedulerConfig, queue_full
from spillgate.engines.llamacpp.tickets import Chunk, Delivery, Job, Slip, Ticket
from spillgate.errors import ApiError, ConfigError, ServiceUnavailable

log = logging.getLogger(__name__)
METRICS_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    """Everything the child needs to build its model and scheduler (pickled to it)."""

    model_path: Path
    shape: ContextShape
    config: SchedulerConfig


@dataclass(frozen=True, slots=True)
class Failure:
    """An ApiError on the wire (exceptions with keyword arguments do not unpickle)."""

    message: str
    code: str | None


# ---- the child ----


class _PipeOutlet:
    """Decode thread → pipe: one message per step; `settle` waits for the parent's ack."""

    def __init__(self, conn: Connection, lock: threading.Lock, slips: dict[int, Slip]) -> None:
        self._conn = conn
        self._lock = lock
        self._slips = slips
        self._cond = threading.Condition()
        self._sent = 0
        self._acked = 0

    def send(self, items: Delivery) -> None:
        wire: list[tuple[int, Chunk | Failure]] = []
        for slip, item in items:
            if isinstance(item, ApiError):
                wire.append((slip.key, Failure(item.message, item.code)))
                self._slips.pop(slip.key, None)
            else:
                wire.append((slip.key, item))
                if item.finish_reason is not None:
                    self._slips.pop(slip.key, None)
        with self._cond:
            self._sent += 1
            step = self._sent
        with self._lock, contextlib.suppress(OSError):  # the parent is gone: nobody listens
            self._conn.send(("step", step, wire))

    def settle(self, wait_s: float) -> None:
        if wait_s > 0:
            with self._cond:
                self._cond.wait_for(lambda: self._acked >= self._sent, timeout=wait_s)

    def acked(self, step: int) -> None:
        with self._cond:
            self._acked = max(self._acked, step)
            self._cond.notify_all()


def serve(conn: Connection, spec: DecoderSpec) -> None:
    """The child's entry point: load, report ready, then serve the pipe until it closes."""
    # A spawned process starts with logging unconfigured: keep llama.cpp's errors only, as the
    # HTTP process does (its load-time log is very chatty).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    # The supervisor signals the engine's whole process group: the HTTP process then drains
    # its requests (which needs this process) and stops it by message; a closed pipe (the
    # HTTP process killed) stops it too.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model = LlamaModel(spec.model_path, spec.shape)
    except ConfigError as exc:
        conn.send(("failed", str(exc)))
        return
    config = spec.config
    metrics = EngineMetrics(queue_capacity=config.max_queue, max_batch=config.max_batch)
    lock = threading.Lock()
    slips: dict[int, Slip] = {}
    outlet = _PipeOutlet(conn, lock, slips)
    scheduler = Scheduler(model, metrics, config, outlet=outlet)
    scheduler.start()
    conn.send(("ready",))
    try:
        _serve_pipe(conn, lock, scheduler, metrics, outlet, slips)
    finally:
        scheduler.stop()
        if not scheduler.thread_alive:  # never free the context under a running decode
            model.close()


def _serve_pipe(conn: Connection, lock: threading.Lock, scheduler: Scheduler,
                metrics: EngineMetrics, outlet: _PipeOutlet, slips: dict[int, Slip]) -> None:
    while scheduler.alive:
        try:
            if not conn.poll(0.5):
                continue
            message = conn.recv()
        except (EOFError, OSError):  # the HTTP process is gone
            return
        kind = message[0]
        if kind == "submit":
            _, key, job, arrived = message
            slip = Slip(job, arrived, key)
            slips[key] = slip
            scheduler.enqueue(slip)
        elif kind == "cancel":
            cancelled = slips.pop(message[1], None)
            if cancelled is not None:
                cancelled.cancel()
        elif kind == "ack":
            outlet.acked(message[1])
        elif kind == "metrics":
            with lock:
                conn.send(("metrics", message[1], metrics.render()))
        elif kind == "rejected":
            metrics.rejected.inc()
        elif kind == "stop":
            return


# ---- the HTTP process ----


class DecoderProcess:
    """The HTTP side's scheduler: same surface as `Scheduler` (submit, start, stop, alive,
    metrics_text), the decoding done by a child process."""

    def __init__(self, spec: DecoderSpec, handoff: bool) -> None:
        self._spec = spec
        self._handoff = handoff
        self._tickets: dict[int, Ticket] = {}
        self._keys = itertools.count(1)
        self._asks: dict[int, asyncio.Future[bytes]] = {}
        self._send_lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._gone = False

    @property
    def n_ctx(self) -> int:
        return self._spec.shape.n_ctx

    @property
    def alive(self) -> bool:
        return (self._process is not None and self._process.is_alive() and not self._gone)

    @property
    def thread_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def launch(self, timeout_s: float = 300.0) -> None:
        """Start the child and wait until its model is loaded; ConfigError if it cannot."""
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        parent, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child, self._spec),
                                        name="llama-decode", daemon=True)
        self._process.start()
        # Before multiprocessing's own exit hook, which would wait forever for a child that
        # ignores SIGTERM: stop it by message (killed if it does not stop in time).
        atexit.register(self.stop)
        child.close()
        self._conn = parent
        if not parent.poll(timeout_s):
            self._process.kill()
            raise ConfigError(f"the decode process did not load the model in {timeout_s:.0f} s")
        try:
            reply = parent.recv()
        except EOFError:
            raise ConfigError("the decode process died while loading the model") from None
        if reply[0] != "ready":
            self._process.join(5)
            raise ConfigError(reply[1])

    def start(self) -> None:
        if self._process is None:
            self.launch()
        self._reader = threading.Thread(target=self._read, name="llama-decode-reader",
                                        daemon=True)
        self._reader.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the child to stop (it fails what is left with 503), then wait for it."""
        if self._process is None:
            return
        self._send(("stop",))
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout_s)
        if self._reader is not None:
            self._reader.join(timeout_s)

    def submit(self, job: Job, loop: asyncio.AbstractEventLoop) -> Ticket:
        """Event-loop thread only. 429 when `max_batch + max_queue` requests are in flight:
        in steady state exactly `max_queue` waiting (every slot is busy before any waits)."""
        if not self.alive:
            raise _stopped()
        config = self._spec.config
        if len(self._tickets) >= config.max_batch + config.max_queue:
            self._send(("rejected",))
            raise queue_full(config.max_queue)
        ticket = Ticket(job, loop, time.monotonic(), next(self._keys))
        ticket._on_cancel = self._cancel
        self._tickets[ticket.key] = ticket
        if self._gone:  # the reader saw the pipe close after the check above: nobody answers
            del self._tickets[ticket.key]
            raise _stopped()
        self._send(("submit", ticket.key, job, ticket.arrived))
        return ticket

    async def metrics_text(self) -> bytes:
        """The child's exposition (event-loop thread)."""
        if not self.alive:
            raise _stopped()
        ask = next(self._keys)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._asks[ask] = future
        try:
            self._send(("metrics", ask))
            return await asyncio.wait_for(future, METRICS_TIMEOUT_S)
        finally:
            self._asks.pop(ask, None)

    def _cancel(self, slip: Slip) -> None:
        if self._tickets.pop(slip.key, None) is not None:
            self._send(("cancel", slip.key))

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None:
            return
        with self._send_lock, contextlib.suppress(OSError):  # the child died: alive says so
            self._conn.send(message)

    # ---- reader thread: pipe → event loops, one wake-up per step and loop ----

    def _read(self) -> None:
        assert self._conn is not None
        try:
            while True:
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    return
                if message[0] == "step":
                    self._hand_over(message[1], message[2])
                elif message[0] == "metrics":
                    self._answer_metrics(message[1], message[2])
        finally:
            self._gone = True
            self._fail_everyone()

    def _hand_over(self, step: int, items: list[tuple[int, Chunk | Failure]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, Chunk | Failure]]] = {}
        for key, item in items:
            ticket = self._tickets.get(key)
            if ticket is not None:
                by_loop.setdefault(ticket.loop, []).append((key, item))
        if not by_loop and self._handoff:  # nothing to take: the child need not wait
            self._send(("ack", step))
        for loop, mine in by_loop.items():
            with contextlib.suppress(RuntimeError):  # closed loop: nobody listens any more
                loop.call_soon_threadsafe(self._deliver, step, mine)

    def _deliver(self, step: int, items: list[tuple[int, Chunk | Failure]]) -> None:
        for key, item in items:
            ticket = self._tickets.get(key)
            if ticket is None:
                continue
            if isinstance(item, Failure):
                del self._tickets[key]
                ticket.deliver(ServiceUnavailable(item.message, code=item.code))
                continue
            if item.finish_reason is not None:
                del self._tickets[key]
            ticket.deliver(item)
        if self._handoff:  # queued behind the wake-ups of the coroutines just fed
            asyncio.get_running_loop().call_soon(self._send, ("ack", step))

    def _answer_metrics(self, ask: int, text: bytes) -> None:
        future = self._asks.get(ask)
        if future is not None:
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future, text)

    def _fail_everyone(self) -> None:
        error = _stopped()
        for ticket in list(self._tickets.values()):
            with contextlib.suppress(RuntimeError):
                ticket.loop.call_soon_threadsafe(ticket.deliver, error)
        self._tickets.clear()


def _stopped() -> ServiceUnavailable:
    return ServiceUnavailable("the llama.cpp decode process is not running",
                              code="engine_unavailable")


def _resolve(future: asyncio.Future[bytes], text: bytes) -> None:
    if not future.done():
        future.set_result(text)
