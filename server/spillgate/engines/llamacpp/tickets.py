"""What flows between the HTTP side and the decode loop: jobs in, chunks out.

A `Slip` is the decode loop's view of one request (its job, arrival, a cancel flag). A
`Ticket` is the HTTP side's: a `Slip` with an asyncio queue the handler reads chunks from.
In one process they are the same object; with a decode process (decoder.py) the child holds
slips and the HTTP process tickets, matched by `key`.

An `Outlet` carries each decode step's chunks out of the decode thread, all of them at once,
and lets that thread wait for them to be taken before the next `llama_decode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from spillgate.engines.llamacpp.logprobs import TokenLogprob
from spillgate.engines.llamacpp.model import SamplingParams
from spillgate.errors import ApiError


@dataclass(frozen=True, slots=True)
class Job:
    """What to generate: prompt tokens, a token budget, sampling and stop strings."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stops: tuple[str, ...] = ()
    priority: int = 0  # lower is admitted first; ties keep arrival order
    logprobs: int | None = None  # None: no logprobs; k: each token's plus the k best


@dataclass(frozen=True, slots=True)
class Chunk:
    """Text released by one step; the last chunk of a request carries finish and usage.

    `logprobs` covers the tokens sampled since the previous chunk (when the job asked for
    them); their text may still be held back by a possible stop string.
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    cached_tokens: int = 0  # of prompt_tokens, found in the slot (prefix reuse): not computed


class TicketCancelled(Exception):
    """Raised by `Ticket.next()` once the ticket was cancelled (its client went away)."""


class Slip:
    """One request as the decode loop sees it."""

    def __init__(self, job: Job, arrived: float, key: int = 0) -> None:
        self.job = job
        self.arrived = arrived
        self.key = key
        self.cancelled = False
        self._on_cancel: Callable[[Slip], None] = lambda _s: None

    def cancel(self) -> None:
        """Stop generating (idempotent): a waiting job leaves the queue, a running one its
        slot at the next step."""
        if not self.cancelled:
            self.cancelled = True
            self._cancelled()
            self._on_cancel(self)

    def _cancelled(self) -> None:
        """Hook for subclasses, run once when cancelled."""


class Ticket(Slip):
    """The caller's handle on a submitted job: read chunks, or cancel."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop, arrived: float,
                 key: int = 0) -> None:
        super().__init__(job, arrived, key)
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | ApiError | TicketCancelled] = asyncio.Queue()

    async def next(self) -> Chunk:
        """The next chunk; raises the ApiError the engine failed with."""
        item = await self._queue.get()
        if isinstance(item, ApiError | TicketCancelled):
            raise item
        return item

    def _cancelled(self) -> None:
        # Event-loop thread only: a coroutine blocked in `next()` is woken with TicketCancelled.
        self._queue.put_nowait(TicketCancelled())

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def deliver(self, item: Chunk | ApiError) -> None:
        """Event-loop thread only."""
        self._queue.put_nowait(item)


Delivery = list[tuple[Slip, Chunk | ApiError]]


class Outlet(Protocol):
    """How the decode thread hands a step's output on."""

    def send(self, items: Delivery) -> None:
        """Every chunk (or error) of one step, in one hand-off."""

    def settle(self, wait_s: float) -> None:
        """Before the next decode: wait up to `wait_s` for the last hand-off to be taken."""


def _deliver_all(items: list[tuple[Ticket, Chunk | ApiError]], delivered: threading.Event,
                 ) -> None:
    for ticket, item in items:
        ticket.deliver(item)
    # Queued behind the wake-ups of the coroutines just fed: set once they have run.
    asyncio.get_running_loop().call_soon(delivered.set)


class LoopOutlet:
    """Same process: one `call_soon_threadsafe` per step and event loop (one wake-up per step,
    not one per token per request); `settle` waits until the loop has run the coroutines
    those chunks woke."""

    def __init__(self) -> None:
        self._handed: list[threading.Event] = []

    def send(self, items: Delivery) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, Chunk | ApiError]]] = {}
        for slip, item in items:
            if isinstance(slip, Ticket):
                by_loop.setdefault(slip.loop, []).append((slip, item))
        for loop, mine in by_loop.items():
            delivered = threading.Event()
            with contextlib.suppress(RuntimeError):  # closed loop: nobody listens any more
                loop.call_soon_threadsafe(_deliver_all, mine, delivered)
                self._handed.append(delivered)

    def settle(self, wait_s: float) -> None:
        if not self._handed:
            return
        deadline = time.monotonic() + wait_s
        for delivered in self._handed:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not delivered.wait(remaining):
                break
        self._handed = []
