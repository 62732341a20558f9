"""The writer thread's direct path (ledger/direct.py: SQL built once, run on the sqlite3
driver) stores what SQLAlchemy's own execution of the same batches stores (the asyncio
batcher's path): the request rows and the hourly rollup, byte for byte, over a sequence
with begin+finish collapsed in one batch, orphan finals, feedback kept by a later final,
rows finalised again (their old contribution subtracted: negative deltas, a group emptied),
voided rows, late open rows, sensitive and spilled rows, several hours, keys and tag sets."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, Engine, select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from spillgate.ledger import rollup
from spillgate.ledger.direct import DirectWriter, remembered, utc_text
from spillgate.ledger.record import RequestRecord, Usage, ledger_money
from spillgate.ledger.rows import RecordRow
from spillgate.ledger.schema import Money, UTCDateTime, money_units
from spillgate.ledger.store import Ledger
from spillgate.ledger.writer import RowOp, RowStatements, sync_sqlite_engine, write_batch

HOUR = 3600.0
T0 = 1_700_000_000.25  # 22:13 UTC: rows of this hour and the next


def _record(rid: str, **changes: Any) -> RequestRecord:
    record = RequestRecord(
        request_id=rid, key_id="k1", route="auto", stream=True, started_at=T0,
        tags={"team": "a"}, sensitivity=frozenset(), reason="local_ok", backend="local",
        tier="local", model="smollm2", arm="b",
        usage=Usage(prompt_tokens=12, cached_tokens=2, completion_tokens=5), status=200,
        ttft_s=0.05, latency_s=0.25, cost_usd=Decimal("0.0000012345"),
        counterfactual_usd=Decimal("0.0001"), draft_usd=Decimal("0.0000000007"))
    return replace(record, **changes)


def _open(record: RequestRecord) -> RowOp:
    return RowOp(record.request_id, RecordRow.of(record, final=False, at=0.0, node_id="n"),
                 final=False)


def _final(record: RequestRecord, at: float = T0 + 1) -> RowOp:
    return RowOp(record.request_id, RecordRow.of(record, final=True, at=at, node_id="n"),
                 final=True)


RECORDS = {
    "plain": _record("plain"),
    "keyless": _record("keyless", key_id=None, tags={}),
    "sensitive": _record("sensitive", sensitivity=frozenset({"email", "iban"}), tier="api",
                         reason="overflow", cost_usd=Decimal("0.002")),
    "spill": _record("spill", tier="api", reason="overflow:queue", backend="openai",
                     cost_usd=Decimal("0.0031415926535")),
    "next-hour": _record("next-hour", started_at=T0 + HOUR, tags={"team": "b", "env": "x"}),
    "cached": _record("cached", cache="exact", avoided_usd=Decimal("0.0004"), saved_tokens=9),
}
MOVED = {  # finalised a second time (recovery, a retried write): different figures
    "plain": _record("plain", cost_usd=Decimal("0.0000000001"), usage=Usage(1, 0, 1),
                     started_at=T0 + 2 * HOUR),  # the stored started_at (and hour) stays
    "spill": _record("spill", tier="local", reason="local_ok", cost_usd=Decimal(0)),
    "sensitive": _record("sensitive", status=502, usage=Usage(0, 0, 0),
                         cost_usd=Decimal(0)),  # voided now: its contribution goes
}


# rows queued as plain dicts (Ledger.begin/finish), most columns left to their defaults,
# the callable one (tags) included
BARE_START = {"request_id": "bare", "started_at": datetime.fromtimestamp(T0, UTC)}
BARE_FINAL = {**BARE_START, "finished_at": datetime.fromtimestamp(T0 + 3, UTC), "status": 200,
              "prompt_tokens": 3, "cost_usd": Decimal("0.25"), "state": "settled"}


def _batches() -> list[list[RowOp]]:
    r = RECORDS
    return [
        [_open(r["plain"]), _open(r["keyless"]), _open(r["sensitive"]), _open(r["spill"]),
         RowOp("bare", BARE_START, final=False)],
        [_final(r["plain"]), _final(r["keyless"]), _open(r["next-hour"]),
         _final(r["next-hour"]),  # begun and finished in one batch
         _final(r["cached"])],  # no open row before it (an orphan)
        [_final(r["sensitive"]), _final(r["spill"]), _open(r["plain"]),  # late open: ignored
         RowOp("bare", BARE_FINAL, final=True)],
        [_final(MOVED["plain"], at=T0 + 5), _final(MOVED["spill"]),
         _final(MOVED["sensitive"])],
        [_final(replace(MOVED["plain"], cost_usd=Decimal("0.5")), at=T0 + 9)],
    ]


def _feedback(db: Path) -> None:
    # POST /v1/feedback between the batches: a later final row must keep it
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE requests SET feedback = 0.75, feedback_at = "
                     "'2023-11-14 22:20:00.000000' WHERE request_id IN ('plain', 'spill')")


def _dump(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM requests ORDER BY request_id").fetchall()
        sums = conn.execute("SELECT * FROM request_rollup ORDER BY hour, key_id, tags, tier, "
                            "sensitive, spill").fetchall()  # fmt: skip
    return rows, sums


def _write_direct(engine: Engine, db: Path) -> None:
    writer = DirectWriter(engine)
    try:
        for i, batch in enumerate(_batches()):
            if i == 3:
                _feedback(db)
            writer.write(batch)
    finally:
        writer.close()


def _write_sqlalchemy(engine: Engine, db: Path) -> None:
    stmts = RowStatements("sqlite")
    for i, batch in enumerate(_batches()):
        if i == 3:
            _feedback(db)
        with engine.begin() as conn:
            write_batch(conn, batch, stmts)


def _ledger_file(db: Path) -> Engine:
    asyncio.run(_migrate(db))
    engine = sync_sqlite_engine(f"sqlite+aiosqlite:///{db}")
    assert engine is not None
    return engine


async def _migrate(db: Path) -> None:
    await (await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")).aclose()


def test_both_paths_store_the_same_rows_and_rollup(tmp_path: Path) -> None:
    direct, reference = tmp_path / "direct.db", tmp_path / "reference.db"
    engines = _ledger_file(direct), _ledger_file(reference)
    try:
        _write_direct(engines[0], direct)
        _write_sqlalchemy(engines[1], reference)
        rollup_sums = _rollup_groups(engines[0])
        rows_sums = _groups_of_rows(engines[0])
    finally:
        for engine in engines:
            engine.dispose()
    assert _dump(direct) == _dump(reference)
    rows, _ = _dump(direct)
    assert len(rows) == len(RECORDS) + 1
    # and what both wrote is right: the rollup is the GROUP BY of the final rows
    assert rollup_sums == rows_sums
    assert len(rows_sums) >= 4  # hours, keys, tag sets and flags were split
    with sqlite3.connect(direct) as conn:
        kept = dict(conn.execute("SELECT request_id, feedback FROM requests"))
        states = dict(conn.execute("SELECT request_id, state FROM requests"))
    assert kept["plain"] == kept["spill"] == 0.75
    assert states["sensitive"] == "voided"


def _rollup_groups(engine: Engine) -> rollup.Groups:
    groups: rollup.Groups = {}
    with engine.connect() as conn:
        for m in conn.execute(select(rollup.request_rollup)).mappings():
            key = rollup.GroupKey(rollup.as_utc(m["hour"]), m["key_id"], m["tags"], m["tier"],
                                  bool(m["sensitive"]), bool(m["spill"]))  # fmt: skip
            sums = rollup.GroupSums(*(m[c] for c in rollup.SUM_COLUMNS))
            if sums != rollup.GroupSums():  # a group emptied by a later final row stays, at 0
                groups[key] = sums
    return groups


def _groups_of_rows(engine: Engine) -> rollup.Groups:
    with engine.connect() as conn:
        return rollup.merge({}, map(rollup.from_raw_row, conn.execute(
            rollup.raw_groups_query("sqlite", None, None))))


def test_a_failed_batch_writes_nothing_and_the_connection_writes_the_next(
        tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    engine = _ledger_file(db)
    writer = DirectWriter(engine)
    try:
        writer.write([_open(RECORDS["plain"])])
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON request_rollup "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            writer.write([_final(RECORDS["plain"]), _open(RECORDS["spill"])])
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER refuse")
            assert conn.execute("SELECT request_id, state FROM requests").fetchall() == \
                [("plain", "open")]
        writer.write([_final(RECORDS["plain"])])
    finally:
        writer.close()
        engine.dispose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state FROM requests").fetchall() == [("settled",)]
        assert conn.execute("SELECT SUM(requests) FROM request_rollup").fetchone() == (1,)


@pytest.mark.parametrize("path", ["direct", "sqlalchemy"])
def test_amounts_finer_than_the_ledger_keeps_count_in_the_rollup_as_stored(
        tmp_path: Path, path: str) -> None:
    """A row keeps 1e-10 USD (half even): 4 rows of 0.5e-10 store 0 each, and the rollup
    must sum those 0s, not round the raw 2e-10 sum of the batch (it did, both paths)."""
    db = tmp_path / "ledger.db"
    engine = _ledger_file(db)
    fine = [_record(f"r{i}", draft_usd=Decimal("0.00000000005"),
                    cost_usd=Decimal("0.00000000015")) for i in range(4)]  # fmt: skip
    try:
        if path == "direct":
            writer = DirectWriter(engine)
            writer.write([_final(r) for r in fine])
            writer.close()
        else:
            with engine.begin() as conn:
                write_batch(conn, [_final(r) for r in fine], RowStatements("sqlite"))
        assert _rollup_groups(engine) == _groups_of_rows(engine)
    finally:
        engine.dispose()


_SQLITE = sqlite_dialect.dialect()
_TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.none() | st.just(UTC) | st.timezones())  # fmt: skip
_AMOUNTS = st.none() | st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**9,
                                   max_value=10**9) | st.integers(-10**9, 10**9)  # fmt: skip


@given(_TIMES)
def test_the_direct_paths_time_text_is_sqlalchemys(moment: datetime) -> None:
    sqlalchemy = UTCDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
    assert sqlalchemy is not None
    assert utc_text(moment) == sqlalchemy(moment)


@given(_AMOUNTS)
def test_money_units_are_the_quantized_amount(amount: Decimal | int | None) -> None:
    sqlalchemy = Money().dialect_impl(_SQLITE).bind_processor(_SQLITE)
    assert sqlalchemy is not None
    expected = None if amount is None else int(ledger_money(Decimal(amount)).scaleb(10))
    assert sqlalchemy(amount) == expected
    assert (None if amount is None else money_units(amount)) == expected


_TAG_VALUES = st.none() | st.booleans() | st.integers(0, 2) | st.floats(0, 2) | st.text(max_size=2)
_TAGS = st.none() | st.dictionaries(st.text(max_size=2) | st.integers(0, 2),
                                    _TAG_VALUES | st.lists(st.text(max_size=1), max_size=1),
                                    max_size=3)  # fmt: skip


@given(st.lists(_TAGS, max_size=12), st.integers(1, 4))
def test_remembered_tags_text_is_sqlalchemys(tags: list[Any], most: int) -> None:
    """Look-alike tags (1, 1.0 and True; the same items in another order) keep their own
    text, whatever came before and whatever the memory dropped."""
    sqlalchemy = JSON().dialect_impl(_SQLITE).bind_processor(_SQLITE)
    assert sqlalchemy is not None
    bind = remembered(sqlalchemy, most)
    for value in tags + tags + [{"a": "1", "b": "2"}, {"b": "2", "a": "1"}, {"a": 1}]:
        assert bind(value) == sqlalchemy(value)


@pytest.mark.parametrize("bad", ["", "abc", [], {}, Decimal("sNaN")])
def test_money_units_refuse_what_is_not_an_amount_as_before(bad: Any) -> None:
    with pytest.raises(Exception) as before:  # its type is what money_units must raise
        int(ledger_money(Decimal(bad)).scaleb(10))
    with pytest.raises(before.type):
        money_units(bad)
