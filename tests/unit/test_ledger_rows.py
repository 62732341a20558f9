"""RecordRow.columns builds a request's row straight from the queued values: it must be the
dict (keys in the same order, equal values of the same types) that RequestStart /
RequestOutcome.from_record(...).columns() build from the record, plus the node id, for
every kind of record: open and final, cache hits, voided and errored, estimated usage,
no timings, sensitive, keyless. And a batch builds only the rows it writes (`split`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.ledger.record import RequestRecord, Usage
from spillgate.ledger.row_ops import RowOp, split
from spillgate.ledger.rows import RecordRow
from spillgate.ledger.schema import RequestOutcome, RequestStart

T0 = 1_700_000_000.25
BASE = RequestRecord(
    request_id="r1", key_id="k1", route="auto", stream=True, started_at=T0,
    tags={"team": "a"}, sensitivity=frozenset(), reason="local_ok", backend="local",
    tier="local", model="smollm2", arm="b", reserved_usd=Decimal("0.01"),
    usage=Usage(prompt_tokens=12, cached_tokens=2, completion_tokens=5, cache_write_tokens=1),
    status=200, ttft_s=0.05, latency_s=0.25, cost_usd=Decimal("0.0000012345"),
    counterfactual_usd=Decimal("0.0001"), draft_usd=Decimal("0.0000000007"), confidence=0.8)
CASES = {
    "plain": BASE,
    "keyless": replace(BASE, key_id=None, tags={}),
    "sensitive-api": replace(BASE, sensitivity=frozenset({"iban", "email"}), tier="api"),
    "cache-hit": replace(BASE, cache="semantic", avoided_usd=Decimal("0.0004"),
                         saved_tokens=9, tier="api"),
    "voided": replace(BASE, status=502, usage=Usage(0, 0, 0), cost_usd=Decimal(0)),
    "bad-request": replace(BASE, status=400, usage=Usage(0, 0, 0), cost_usd=Decimal(0)),
    "ok-without-usage": replace(BASE, status=399, usage=Usage(0, 0, 0), cost_usd=Decimal(0)),
    "error-with-cost": replace(BASE, status=500, usage=Usage(0, 0, 0)),
    "error-with-tokens": replace(BASE, status=429, usage=Usage(3, 0, 0), cost_usd=Decimal(0)),
    "estimated": replace(BASE, usage=Usage(4, 0, 7, measured=False)),
    "no-timings": replace(BASE, ttft_s=None, latency_s=None, confidence=None),
}


def _expected(record: RequestRecord, final: bool, at: float) -> dict[str, Any]:
    if final:
        row = RequestOutcome.from_record(record, datetime.fromtimestamp(at, UTC)).columns()
    else:
        row = RequestStart.from_record(record).columns()
    row["node_id"] = "n"
    return row


def _same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@pytest.mark.parametrize("final", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_record_row_columns_are_the_dataclasses_columns(name: str, final: bool) -> None:
    record = CASES[name]
    got = RecordRow.of(record, final=final, at=T0 + 1.5, node_id="n").columns()
    _same(got, _expected(record, final, T0 + 1.5))


def test_the_row_keeps_the_values_it_was_queued_with() -> None:
    record = replace(BASE)
    row = RecordRow.of(record, final=True, at=T0, node_id="n")
    record.usage = Usage(99, 0, 99)  # replaced, as the service does, never changed in place
    record.status = 503
    assert row.columns() == _expected(BASE, True, T0)


money = st.decimals(min_value=0, max_value=10, places=12, allow_nan=False)
records = st.builds(
    RequestRecord, request_id=st.text(min_size=1, max_size=8), key_id=st.none() | st.text(),
    route=st.text(max_size=5), stream=st.booleans(),
    started_at=st.floats(min_value=0, max_value=4e9),
    tags=st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
    sensitivity=st.frozensets(st.sampled_from(["email", "iban", "phone"])),
    reason=st.text(max_size=5), tier=st.sampled_from(["local", "api"]),
    reserved_usd=money, usage=st.builds(Usage, st.integers(0, 9), st.integers(0, 9),
                                        st.integers(0, 9), st.booleans(), st.integers(0, 9)),
    status=st.sampled_from([200, 400, 429, 500, 502]), ttft_s=st.none() | st.floats(0, 9),
    latency_s=st.none() | st.floats(0, 9), cost_usd=money, counterfactual_usd=money,
    arm=st.text(max_size=3), draft_usd=money, confidence=st.none() | st.floats(0, 1),
    cache=st.sampled_from(["", "exact", "semantic"]), avoided_usd=money,
    saved_tokens=st.integers(0, 9))  # fmt: skip


@given(records, st.booleans(), st.floats(min_value=0, max_value=4e9))
def test_any_record_gives_the_dataclasses_columns(record: RequestRecord, final: bool,
                                                  at: float) -> None:  # fmt: skip
    _same(RecordRow.of(record, final=final, at=at, node_id="n").columns(),
          _expected(record, final, at))


class _Built:
    """A row that records being built."""

    def __init__(self, rid: str, built: list[str]) -> None:
        self.rid, self.built = rid, built

    def columns(self) -> dict[str, Any]:
        self.built.append(self.rid)
        return {"request_id": self.rid}


def test_split_collapses_a_batch_and_builds_only_the_rows_written() -> None:
    built: list[str] = []

    def op(rid: str, final: bool, tag: str = "") -> RowOp:
        return RowOp(rid, _Built(rid + tag, built), final)  # type: ignore[arg-type]

    opened, final = split([op("a", False), op("b", False), op("a", True), op("c", True, "1"),
                           op("c", False), op("c", True, "2"), op("d", False, "1"),
                           op("d", False, "2")])  # fmt: skip
    assert list(opened) == ["b", "d"]
    assert list(final) == ["a", "c"]
    assert [opened["d"]["request_id"], final["c"]["request_id"]] == ["d2", "c2"]
    assert sorted(built) == ["a", "b", "c2", "d2"]  # not the open a, c1, the late c, d1
