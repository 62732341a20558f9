"""One owner of a request's life: the ledger row, the local slot, the settle and the metrics.

`RequestLife` is an async context manager around the whole request path. Whatever the exit —
an answer, an `ApiError`, any other exception, the client going away before or after the first
byte, an answer without usage, a reservation that failed (the database included) — leaving the
block settles the row exactly once, gives back the local in-flight slot, releases the budget
reservation (the accountant's `finish` does that) and counts the request in
`spillgate_requests_total`, refused requests included.

An exception nobody planned for becomes a 500 `InternalError` in the OpenAI error shape,
logged as one line (request id, exception type, where it was raised): never the body, never a
traceback that could echo request content.

A streamed answer is handed over: from then on the stream relay settles through `settle()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from spillgate.errors import ApiError, ClientClosed, InternalError, describe
from spillgate.ledger.record import RequestRecord
from spillgate.routing.router import Target

if TYPE_CHECKING:
    from spillgate.service import Node

log = logging.getLogger(__name__)
CLIENT_CLOSED = ClientClosed.status  # recorded when the client went away first (nginx's 499)


class RequestLife:
    def __init__(self, node: Node, request_id: str) -> None:
        self.node = node
        self.request_id = request_id
        self.route = "none"  # the route's name once resolved (a bounded metric label)
        self.record: RequestRecord | None = None
        self._settled = False
        self._handed_over = False
        self._cleanups: list[Callable[[], Awaitable[object]]] = []

    # --- what the path calls ----------------------------------------------------------------
    def begin(self, record: RequestRecord, first: Target) -> None:
        """The request is routed: claim the local slot if it goes local, open its row."""
        self.record = record
        if first.tier == "local":
            record.claimed_backend = first.backend
            self.node.inflight.enter(first.backend)
        self.node.accountant.open_row(record)

    def release_slot(self) -> None:
        """The request left the local engine (served elsewhere, or settled)."""
        record = self.record
        if record is not None and record.claimed_backend:
            self.node.inflight.leave(record.claimed_backend)
            record.claimed_backend = None

    def on_exit(self, cleanup: Callable[[], Awaitable[object]]) -> None:
        """Run `cleanup` (e.g. close an upstream stream) if the block exits before handing
        the request over."""
        self._cleanups.append(cleanup)

    def hand_over(self) -> None:
        """The stream relay owns the rest: it calls `settle` when the stream ends."""
        self._handed_over = True
        self._cleanups.clear()

    @property
    def settled(self) -> bool:
        return self._settled

    async def settle(self, status: int) -> None:
        """Settle once: slot back, row finished (reservation released or spent), metrics."""
        record = self.record
        if record is None or self._settled:
            return
        self._settled = True
        record.status = status
        self.release_slot()
        step = self._finish(record)
        if step is not None:  # Shielded: a second cancellation must not stop the row.
            await asyncio.shield(self._finish_step(record, step))
        m = self.node.metrics
        m.token_count(record.backend, "prompt").inc(record.usage.prompt_tokens)
        m.token_count(record.backend, "completion").inc(record.usage.completion_tokens)
        if record.ttft_s is not None:
            m.ttft_of(record.backend).observe(record.ttft_s)
        if record.latency_s is not None:
            m.duration_of(record.backend).observe(record.latency_s)
        self._count(record.backend or "none", record.route, record.reason or "refused", status)

    # --- the one exit -----------------------------------------------------------------------
    async def __aenter__(self) -> RequestLife:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None and (self._handed_over or self.record is None):
            return  # the relay settles a stream; a block that routed nothing has no exit
        status, replacement = self._outcome(exc)
        for cleanup in self._cleanups:
            with contextlib.suppress(Exception):
                await cleanup()
        if self.record is None:
            self._count("none", self.route, "refused", status)  # refused before routing
        else:
            await self.settle(status)
        if replacement is not None:
            raise replacement from None

    def _outcome(self, exc: BaseException | None) -> tuple[int, ApiError | None]:
        if exc is None:
            return 200, None
        if isinstance(exc, ApiError):
            return exc.status, None
        if isinstance(exc, asyncio.CancelledError):
            return CLIENT_CLOSED, None
        log.error("request %s failed: %s", self.request_id, describe(exc))
        if isinstance(exc, Exception):
            return 500, InternalError("internal error; the request was not served")
        return 500, None  # KeyboardInterrupt, SystemExit: let them through

    def _finish(self, record: RequestRecord) -> Callable[[], Awaitable[object]] | None:
        try:
            return self.node.accountant.finish(record)
        except Exception as exc:  # the ledger must not take the answer down; recovered later
            log.error("settling request %s failed: %s", record.request_id, describe(exc))
            return None

    async def _finish_step(self, record: RequestRecord,
                           step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except Exception as exc:  # as above
            log.error("settling request %s failed: %s", record.request_id, describe(exc))

    def _count(self, backend: str, route: str, reason: str, status: int) -> None:
        self.node.metrics.request_count(backend, route, reason, str(status)).inc()
