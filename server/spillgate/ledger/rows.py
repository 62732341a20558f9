"""A request's ledger row, built off the event loop.

The request path queues a `RecordRow`: the record's values at that moment, taken in one C
call (`attrgetter`) into a tuple, plus the clock reading. The row's dict (the RequestStart /
RequestOutcome columns: datetimes, the sensitivity list, the tags copy, the cost kind and
state) is built by the batcher when it writes the batch: on SQLite that is the writer thread,
so the loop pays for a tuple, not for two dataclasses and a dict per row.

The values are those at queue time: a record changed afterwards (it is not, in practice)
cannot change the row.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from spillgate.ledger.record import RequestRecord
from spillgate.ledger.schema import RequestOutcome, RequestStart

# Every field: a RequestRecord rebuilt from them is the record as it was (usage and tags are
# replaced, never changed in place, so sharing them is safe).
_FIELDS: Final = tuple(f.name for f in fields(RequestRecord))
_snapshot: Final = operator.attrgetter(*_FIELDS)


@dataclass(frozen=True, slots=True)
class RecordRow:
    values: tuple[Any, ...]
    final: bool
    at: float  # epoch seconds the row was queued (a final row's finished_at)
    node_id: str

    @classmethod
    def of(cls, record: RequestRecord, *, final: bool, at: float, node_id: str) -> RecordRow:
        return cls(_snapshot(record), final, at, node_id)

    def columns(self) -> dict[str, Any]:
        record = object.__new__(RequestRecord)  # every slot set below: no __init__ needed
        for name, value in zip(_FIELDS, self.values, strict=True):
            object.__setattr__(record, name, value)
        if self.final:
            row = RequestOutcome.from_record(record, datetime.fromtimestamp(self.at, UTC))
            columns = row.columns()
        else:
            columns = RequestStart.from_record(record).columns()
        columns["node_id"] = self.node_id
        return columns
