"""A request's ledger row, built off the event loop.

The request path queues a `RecordRow`: the record's values the row needs at that moment,
taken in one C call (`attrgetter`) into a tuple, plus the clock reading. The row's dict (the
RequestStart / RequestOutcome columns: datetimes, the sensitivity list, the tags copy, the
cost kind and state) is built by the batcher when it writes the batch: on SQLite that is the
writer thread, so the loop pays for a tuple, not for two dataclasses and a dict per row.

`columns` builds the dict straight from the tuple: the same values, in the same order, as
`RequestOutcome.from_record(...).columns()` (or `RequestStart`'s for an open row) plus the
node id, without rebuilding the record and the two dataclasses (those cost the writer
thread, and through the GIL the event loop, more than the database did: issue 14).
tests/unit/test_ledger_rows.py holds the two to the same dicts.

The values are those at queue time: a record changed afterwards (it is not, in practice)
cannot change the row.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from spillgate.ledger.record import RequestRecord

# What the row reads of a record, in the order `columns` unpacks it (usage and tags are
# replaced, never changed in place, so sharing them is safe; dotted names for usage's
# counts cost the event loop more than the one reference).
_FIELDS: Final = (
    "request_id", "key_id", "route", "stream", "started_at", "tags", "sensitivity", "reason",
    "backend", "tier", "model", "reserved_usd", "arm", "cache", "status", "ttft_s",
    "latency_s", "cost_usd", "counterfactual_usd", "draft_usd", "confidence", "saved_tokens",
    "avoided_usd", "usage")  # fmt: skip
_snapshot: Final = operator.attrgetter(*_FIELDS)
_fromtimestamp: Final = datetime.fromtimestamp


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 4x the
# cost of this one on the event loop, which builds one per row; nothing changes it.
@dataclass(slots=True)
class RecordRow:
    values: tuple[Any, ...]
    final: bool
    at: float  # epoch seconds the row was queued (a final row's finished_at)
    node_id: str

    @classmethod
    def of(cls, record: RequestRecord, *, final: bool, at: float, node_id: str) -> RecordRow:
        return cls(_snapshot(record), final, at, node_id)

    def columns(self) -> dict[str, Any]:
        (request_id, key_id, route, stream, started_at, tags, sensitivity, reason, backend,
         tier, model, reserved_usd, arm, cache, status, ttft_s, latency_s, cost_usd,
         counterfactual_usd, draft_usd, confidence, saved_tokens, avoided_usd,
         usage) = self.values
        tier = "cache" if cache else tier  # a hit reached no tier (RequestStart.from_record)
        row = {
            "request_id": request_id, "started_at": _fromtimestamp(started_at, UTC),
            "key_id": key_id, "tags": dict(tags), "route": route, "reason": reason,
            "backend": backend, "tier": tier, "model": model, "stream": stream,
            "sensitivity": ",".join(sorted(sensitivity)), "reserved_usd": reserved_usd,
            "state": "open", "arm": arm,
        }  # fmt: skip
        if not self.final:
            row["node_id"] = self.node_id
            return row
        prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        consumed = prompt_tokens or completion_tokens or cost_usd  # RequestOutcome.state
        row.update(
            finished_at=_fromtimestamp(self.at, UTC), status=status,
            prompt_tokens=prompt_tokens, cached_tokens=usage.cached_tokens,
            completion_tokens=completion_tokens, cache_write_tokens=usage.cache_write_tokens,
            ttft_ms=None if ttft_s is None else ttft_s * 1000.0,
            latency_ms=None if latency_s is None else latency_s * 1000.0,
            cost_usd=cost_usd, cost_kind="api" if tier == "api" else "local",
            counterfactual_usd=counterfactual_usd,
            usage_source="measured" if usage.measured else "estimated",
            state="voided" if status >= 400 and not consumed else "settled",
            draft_usd=draft_usd, confidence=confidence, cache=cache,
            saved_tokens=saved_tokens, avoided_usd=avoided_usd, node_id=self.node_id,
        )  # fmt: skip
        return row
