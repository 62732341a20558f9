"""The ledger writer thread's batches on a SQLite file, straight on its sqlite3 connection.

At one client each 20 ms batch holds one or two rows, so every request paid a whole
transaction of SQLAlchemy's execution machinery (pool checkout, the Connection and its
begin event, per statement the compiled-cache lookup, the expanding IN, parameter
processing): the writer thread spent more CPU on that than on the database, and took it from
the event loop through the GIL (issue 14). Here the thread keeps one driver connection and
writes a batch as BEGIN IMMEDIATE, the stored final rows' lookup, one executemany per
statement and set of columns, COMMIT.

Each statement's SQL and its columns' bind processors are built once, by SQLAlchemy itself,
from the very statements the asyncio batcher executes (`RowStatements`,
`rollup.rollup_upsert`), so the values stored are those SQLAlchemy's execution would store
(tests/unit/test_ledger_direct.py compares both paths' tables byte for byte). Three column
kinds bind cheaper, to the same values (the same tests hold them to SQLAlchemy's processors):
money through `schema.money_units` (what Money does on SQLite, in one call), times through
`utc_text` (UTCDateTime and SQLite's DATETIME text in one call), and the tags' JSON text
remembered per tag set (`remembered`); a column default is bound once per statement. The
lookup is plain SQL over `rollup.LOOKUP`'s columns, its values read back through the
columns' result processors, as `rollup.stored_final_rows_sync` reads them.
"""

from __future__ import annotations

import logging
import operator
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Dialect,
    Engine,
    Insert,
    PoolProxiedConnection,
    Table,
    bindparam,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from spillgate.ledger import rollup
from spillgate.ledger.group_key import text_items
from spillgate.ledger.row_ops import RowOp, Rows, RowStatements, by_columns, split
from spillgate.ledger.schema import Money, UTCDateTime, money_units, requests

log = logging.getLogger(__name__)
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Compiled:
    """An INSERT's SQL for one set of columns, with what turns a row into its parameters."""

    sql: str
    values: Callable[[dict[str, Any]], tuple[Any, ...]]  # a row's, in the statement's order
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)
    defaults: dict[str, Any]  # parameters no row carries: the columns' scalar defaults
    made: tuple[tuple[str, Callable[[Any], Any]], ...]  # ...and their callable defaults

    @classmethod
    def of(cls, dialect: Dialect, table: Table, stmt: Insert,
           names: tuple[str, ...]) -> Compiled:  # fmt: skip
        compiled = stmt.values({n: bindparam(n) for n in names}).compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())
        defaults: dict[str, Any] = {}  # bound once here, not once per row
        made: list[tuple[str, Callable[[Any], Any]]] = []
        for name in order:
            default = None if name in names else table.c[name].default
            if isinstance(default, ScalarElementColumnDefault):
                process = _bind(table.c[name], dialect)
                defaults[name] = default.arg if process is None else process(default.arg)
            elif isinstance(default, CallableColumnDefault):
                made.append((name, default.arg))  # SQLAlchemy's wrapper: takes a context
            elif name not in names:
                raise ValueError(f"{table.name}.{name}: neither given nor defaulted")
        # The row's values taken in one C call, processors run only where a given column has
        # one (most have none): a generator over every column cost the writer thread more.
        getter = operator.itemgetter(*order)
        values = getter if len(order) > 1 else lambda row: (getter(row),)
        convert = tuple((i, p) for i, n in enumerate(order) if n not in defaults
                        and (p := _bind(table.c[n], dialect)) is not None)  # fmt: skip
        return cls(str(compiled), values, convert, defaults, tuple(made))

    def run(self, db: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
        if self.made:
            rows = [self.defaults | {n: make(None) for n, make in self.made} | row
                    for row in rows]  # fmt: skip
        elif self.defaults:
            rows = [self.defaults | row for row in rows]
        params = []
        for row in rows:
            values = list(self.values(row))
            for i, process in self.convert:
                values[i] = process(values[i])
            params.append(values)
        db.executemany(self.sql, params)


def _bind(column: Column[Any], dialect: Dialect) -> Processor:
    """The processor SQLAlchemy itself applies (the type's implementation for the dialect),
    or for money and times the very same conversion in one call instead of three."""
    if isinstance(column.type, Money) and dialect.name == "sqlite":
        return money_units  # what Money.process_bind_param does on SQLite
    if isinstance(column.type, UTCDateTime) and dialect.name == "sqlite":
        return utc_text
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return remembered(process) if isinstance(column.type, JSON) and process else process


def remembered(process: Callable[[Any], Any], most: int = 1024) -> Callable[[Any], Any]:
    """A JSON column's processor remembering the text of text-only dicts by their items
    (a request's tags: the same few sets, serialized for nearly every row)."""
    texts: dict[tuple[tuple[str, str], ...], Any] = {}

    def bind(value: Any) -> Any:
        items = text_items(value) if value.__class__ is dict else None
        if items is None:
            return process(value)
        text = texts.get(items)
        if text is None:
            if len(texts) >= most:
                texts.clear()
            text = texts[items] = process(value)
        return text

    return bind


def utc_text(value: datetime | None) -> str | None:
    """`UTCDateTime` bound on SQLite: naive UTC in SQLAlchemy's DATETIME storage format
    (tests/unit/test_ledger_direct.py holds the two to the same text)."""
    if value is None:
        return None
    if value.__class__ is not datetime:  # a subclass, or not a datetime: SQLAlchemy's way
        return _UTC_TEXT(value)
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return _DATETIME_FORMAT % (value.year, value.month, value.day, value.hour, value.minute,
                               value.second, value.microsecond)  # fmt: skip


_SQLITE = sqlite.dialect()
_UTC_TEXT: Callable[[Any], str] = UTCDateTime().dialect_impl(_SQLITE).bind_processor(
    _SQLITE)  # type: ignore[assignment]
_DATETIME_FORMAT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # sqlite.DATETIME's default


class DirectWriter:
    """Writes batches through one sqlite3 connection of `engine` (its pool's connect event
    set the WAL pragmas and left transaction control to us). One batch at a time: the
    caller holds a lock."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._stmts = RowStatements("sqlite")
        self._compiled: dict[tuple[int, tuple[str, ...]], Compiled] = {}
        self._raw: PoolProxiedConnection | None = None
        self._lookup = _Lookup(self._dialect)

    def write(self, batch: Sequence[RowOp]) -> None:
        """Write and commit the batch in one transaction; nothing of it if it fails."""
        if self._raw is None:  # opened by the thread that writes, not at construction
            self._raw = self._engine.raw_connection()
        db: sqlite3.Connection = self._raw.driver_connection  # type: ignore[assignment]
        db.execute("BEGIN IMMEDIATE")  # see migrations.sqlite_begin
        try:
            self._write(db, batch)
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db)
            raise

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _write(self, db: sqlite3.Connection, batch: Sequence[RowOp]) -> None:
        opened, final = split(batch)
        if opened:
            self._insert(db, requests, self._stmts.insert_open, opened.values())
        if final:
            stored = self._lookup.stored_final_rows(db, list(final))
            self._insert(db, requests, self._stmts.upsert_final, final.values())
            groups = rollup.deltas(stored, final.values())
            self._insert(db, rollup.request_rollup, rollup.rollup_upsert("sqlite"),
                         rollup.upsert_params(groups))  # fmt: skip

    def _insert(self, db: sqlite3.Connection, table: Table, stmt: Insert,
                rows: Iterable[dict[str, Any]]) -> None:  # fmt: skip
        for group in by_columns(rows):
            key = (id(stmt), tuple(group[0]))
            if key not in self._compiled:
                self._compiled[key] = Compiled.of(self._dialect, table, stmt, key[1])
            self._compiled[key].run(db, group)

    def _rollback(self, db: sqlite3.Connection) -> None:
        """Roll the failed batch back; a connection that cannot is dropped (a new one next
        batch), so it cannot keep the write lock."""
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("ledger writer: rollback failed; reconnecting")
            if self._raw is not None:
                self._raw.invalidate()
                self._raw = None


class _Lookup:
    """`rollup.stored_final_rows_sync` as plain SQL on the driver: the final rows already
    stored under some ids, their values read as SQLAlchemy reads them."""

    def __init__(self, dialect: Dialect) -> None:
        # only the schema's column names and '?' marks go into the text, never a value
        names = ", ".join(c.name for c in rollup.LOOKUP)
        self._sql = (f"SELECT {names} FROM requests WHERE state NOT IN "  # noqa: S608
                     f"({', '.join('?' * len(rollup.NOT_FINAL))}) AND request_id IN ")
        self._columns = tuple((c.name, c.type.dialect_impl(dialect).result_processor(
            dialect, None)) for c in rollup.LOOKUP)  # fmt: skip

    def stored_final_rows(self, db: sqlite3.Connection, ids: list[str]) -> Rows:
        found: Rows = {}
        marks = ", ".join("?" * len(ids))  # at most WRITE_MAX: under SQLite's 32766
        for values in db.execute(f"{self._sql}({marks})", (*rollup.NOT_FINAL, *ids)):
            row = {name: value if p is None else p(value)
                   for (name, p), value in zip(self._columns, values, strict=True)}
            found[str(row["request_id"])] = row
        return found
