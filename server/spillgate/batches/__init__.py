"""The Batch API: OpenAI-compatible files and batches, run on idle local capacity.

`BatchService` is what the app keeps: the file and batch stores over the ledger database and
the scheduler, built once the ledger is open (`start`) and stopped before it closes.
"""

from __future__ import annotations

from spillgate import service
from spillgate.batches.files import FileStore
from spillgate.batches.scheduler import BatchScheduler
from spillgate.batches.store import BatchStore
from spillgate.errors import ServiceUnavailable
from spillgate.ledger.store import Ledger
from spillgate.settings import BatchSettings


class BatchService:
    def __init__(self, node: service.Node, config: BatchSettings) -> None:
        self.node = node
        self.config = config
        self._parts: tuple[FileStore, BatchStore, BatchScheduler] | None = None

    async def start(self, ledger: Ledger) -> None:
        store = BatchStore(ledger)
        scheduler = BatchScheduler(self.node, store, self.config)
        await scheduler.start()
        self._parts = (FileStore(ledger), store, scheduler)

    async def stop(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            await parts[2].stop()

    def _get(self) -> tuple[FileStore, BatchStore, BatchScheduler]:
        if self._parts is None:
            raise ServiceUnavailable("the batch service is not running")
        return self._parts

    @property
    def files(self) -> FileStore:
        return self._get()[0]

    @property
    def store(self) -> BatchStore:
        return self._get()[1]

    @property
    def scheduler(self) -> BatchScheduler:
        return self._get()[2]
