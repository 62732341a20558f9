"""Connecting to the ledger database and bringing its schema up to date, once at start-up.

Migrations are an ordered list of (version, step). `migrate` applies the missing ones in one
transaction and records each in `schema_version`, so it is idempotent and a failed step leaves
nothing half-done (DDL is transactional on both SQLite and PostgreSQL). Replicas starting
together are serialized: on PostgreSQL by a transaction-scoped advisory lock, on SQLite by
`BEGIN IMMEDIATE` (the database's single write lock, waited for through busy_timeout).

A new schema change is a new (version, step) appended to MIGRATIONS. Step 1 creates the
tables as schema.py defines them; when schema.py changes later, step 1 must keep creating
the version-1 tables (freeze their definitions there) and the change goes into a new step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, bindparam, event, insert, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from spillgate.ledger import rollup, schema
from spillgate.ledger.batch_tables import create_batch_tables
from spillgate.ledger.hardware_lease import create_lease_table
from spillgate.ledger.schema import Money

Step = Callable[[Connection], None]
_ADVISORY_LOCK_ID = 0x5B16A7E  # any constant unique to spillgate's migrations
SQLITE_BUSY_TIMEOUT_MS = 10_000
READONLY = "spillgate_readonly"  # execution option: a SQLite read transaction (plain BEGIN)


def _create_v1(conn: Connection) -> None:
    tables = [t for t in schema.metadata.sorted_tables if t.name != "schema_version"]
    schema.metadata.create_all(conn, tables=tables, checkfirst=True)


def _hardware_power_source(conn: Connection) -> None:
    """hardware_periods: measured_s, external_s, unattributed_usd (a database created by
    this version's step 1 has them already)."""
    have = {c["name"] for c in inspect(conn).get_columns("hardware_periods")}
    table = schema.hardware_periods
    for name in ("measured_s", "external_s", "unattributed_usd"):
        if name in have:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)  # Float, or Money's dialect type
        conn.execute(text(f"ALTER TABLE hardware_periods ADD COLUMN {name} {kind} "
                          "NOT NULL DEFAULT 0"))


def _rate_events(conn: Connection) -> None:
    """rate_events: the shared RPM/TPM windows (a database created by this version's step 1
    has it already)."""
    schema.rate_events.create(conn, checkfirst=True)


def _cascade_arms_feedback(conn: Connection) -> None:
    """requests: arm, draft_usd, confidence, feedback, feedback_at (issue 15; a database
    created by this version's step 1 has them already)."""
    have = {c["name"] for c in inspect(conn).get_columns("requests")}
    for name in ("arm", "draft_usd", "confidence", "feedback", "feedback_at"):
        if name in have:
            continue
        column = schema.requests.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        default = {"arm": " NOT NULL DEFAULT ''", "draft_usd": " NOT NULL DEFAULT 0"}
        conn.execute(text(f"ALTER TABLE requests ADD COLUMN {name} {kind}"
                          f"{default.get(name, '')}"))


def _response_cache(conn: Connection) -> None:
    """requests: cache, saved_tokens, avoided_usd; api_keys: cache_namespace (a database
    created by this version's step 1 has them already)."""
    _add_missing(conn, schema.requests, {"cache": "''", "saved_tokens": "0",
                                         "avoided_usd": "0"})
    _add_missing(conn, schema.api_keys, {"cache_namespace": None})


def _add_missing(conn: Connection, table: Any, columns: dict[str, str | None]) -> None:
    """ALTER TABLE … ADD COLUMN for each column the table lacks (None: nullable)."""
    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for name, default in columns.items():
        if name in have:
            continue
        kind = table.c[name].type.compile(dialect=conn.dialect)
        tail = "" if default is None else f" NOT NULL DEFAULT {default}"
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}{tail}"))


def _cache_write_tokens(conn: Connection) -> None:
    """requests.cache_write_tokens: prompt tokens written to a provider's prompt cache."""
    have = {c["name"] for c in inspect(conn).get_columns("requests")}
    if "cache_write_tokens" not in have:
        conn.execute(text("ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER "
                          "NOT NULL DEFAULT 0"))


def _rollup_draft_usd(conn: Connection) -> None:
    """Migration step 13: the rollup's draft_usd, summed again from the final rows for the
    groups that have drafts (a rollup created by this version's step 3 has the column)."""
    if "draft_usd" not in {c["name"] for c in inspect(conn).get_columns("request_rollup")}:
        kind = rollup.request_rollup.c.draft_usd.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE request_rollup ADD COLUMN draft_usd {kind} "
                          "NOT NULL DEFAULT 0"))
    groups = rollup.merge({}, map(rollup.from_raw_row, conn.execute(rollup.raw_groups_query(
        conn.dialect.name, None, None))))
    r = rollup.request_rollup.c
    match = and_(*(r[c] == bindparam(f"k_{c}") for c in rollup.GROUP_COLUMNS))
    params = [{**{f"k_{c}": v for c, v in rollup.key_columns(k).items()}, "d": sums.draft_usd}
              for k, sums in sorted(groups.items()) if sums.draft_usd]
    if params:
        new = bindparam("d", type_=Money())
        conn.execute(update(rollup.request_rollup).where(match).values(draft_usd=new), params)


MIGRATIONS: list[tuple[int, Step]] = [
    (1, _create_v1),
    (2, _hardware_power_source),
    (3, rollup.backfill),  # hourly request_rollup for reports, filled from existing rows
    (4, _rate_events),  # RPM/TPM windows shared by the replicas of a PostgreSQL ledger
    (6, _cascade_arms_feedback),  # issue 15: canary arm, cascade draft cost, feedback
    (7, _response_cache),  # response-cache hits on request rows; key cache namespaces
    (8, create_batch_tables),  # Batch API: files, batches, lines (ledger/batch_tables.py)
    (11, _cache_write_tokens),  # provider prompt-cache writes, priced at their own rate
    (13, _rollup_draft_usd),  # cascade draft cost in the hourly rollup (reports split it)
    (14, create_lease_table),  # who books a pool's hardware (several gateway processes)
]


def open_engine(dsn: str) -> AsyncEngine:
    """An AsyncEngine for the DSN; SQLite gets its folder, WAL and explicit transactions."""
    url = make_url(dsn)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(dsn, pool_recycle=1800)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # The pool rolls back on check-in (SQLAlchemy's default). Skipping it saved a thread hop
    # per use, but a task cancelled inside a write transaction (shutdown, a client leaving)
    # could hand back its aiosqlite connection without a ROLLBACK reaching SQLite (traced in
    # the batch tests): it kept the write lock and every later write failed after the busy
    # timeout. Request rows do not pass here (writer thread).
    engine = create_async_engine(dsn)
    event.listen(engine.sync_engine, "connect", sqlite_connect)
    event.listen(engine.sync_engine, "begin", sqlite_begin)
    return engine


def sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the driver so `sqlite_begin` decides how to begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL",
                   f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that reads and then writes
    # can fail with SQLITE_BUSY without waiting when another process wrote in between.
    readonly = conn.get_execution_options().get(READONLY, False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


async def migrate(engine: AsyncEngine) -> list[int]:
    """Apply the missing migrations; returns the versions applied now (empty if up to date)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                               {"id": _ADVISORY_LOCK_ID})
        return await _apply_missing(conn)


async def _apply_missing(conn: AsyncConnection) -> list[int]:
    await conn.run_sync(
        lambda sync: schema.schema_version.create(sync, checkfirst=True)
    )
    done = set((await conn.execute(select(schema.schema_version.c.version))).scalars())
    applied = []
    for version, step in MIGRATIONS:
        if version in done:
            continue
        await conn.run_sync(step)
        await conn.execute(insert(schema.schema_version).values(
            version=version, applied_at=datetime.now(UTC)))
        applied.append(version)
    return applied


async def current_version(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READONLY: True})
        result = await conn.execute(select(schema.schema_version.c.version))
        return max(result.scalars(), default=0)
