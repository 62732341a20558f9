"""A throwaway PostgreSQL server for the ledger tests (`pg_dsn`, session-scoped).

tests/conftest.py imports the fixture (`from tests.pg import pg_dsn`). It runs initdb into a
temporary folder and starts the server on 127.0.0.1 with a free port and its socket in that
folder; as root it runs the server as the `postgres` system user (PostgreSQL refuses root).
No PostgreSQL binaries: the tests are skipped, except under CI=true where that is a failure.
`fresh_database(dsn)` gives each test its own empty database on that server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support import free_port

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """Folder holding initdb/pg_ctl: $PG_BINDIR, PATH, or Debian's /usr/lib/postgresql/N/bin."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else "")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _as_server_user() -> list[str]:
    """Command prefix that drops root to the postgres user; nothing when not root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise RuntimeError("running as root needs `runuser` to start PostgreSQL as postgres")
    subprocess.run(["id", SUPERUSER], check=True, capture_output=True)
    return ["runuser", "-u", SUPERUSER, "--"]


@contextlib.contextmanager
def pg_server(bindir: Path) -> Iterator[str]:
    """Start a server; yields its `postgresql+asyncpg://` DSN for database `spillgate`."""
    prefix = _as_server_user()
    home = Path(tempfile.mkdtemp(prefix="spillgate-pg-"))
    if prefix:
        shutil.chown(home, user=SUPERUSER)
    data, port = home / "data", free_port()

    def pg(tool: str, *args: str) -> None:
        done = subprocess.run([*prefix, str(bindir / tool), *args], capture_output=True,
                              timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.decode()}")

    try:
        pg("initdb", "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
           "--locale=C", "--no-sync")
        options = (f"-h 127.0.0.1 -p {port} -k {home} -c fsync=off -c max_connections=200 "
                   "-c synchronous_commit=off")
        pg("pg_ctl", "-D", str(data), "-l", str(home / "server.log"), "-o", options,
           "-w", "-t", "60", "start")
        try:
            pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "spillgate")
            yield f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{port}/spillgate"
        finally:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server for this test session (see module docstring)."""
    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found; set PG_BINDIR"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (required under CI=true)")
        pytest.skip(reason)
    with pg_server(bindir) as dsn:
        yield dsn


async def fresh_database(dsn: str) -> str:
    """Create an empty database on the server of `dsn`; returns its DSN."""
    import asyncpg

    url = make_url(dsn)
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username,
                                 database=url.database)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def ledger_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each ledger test once on a fresh SQLite file (in folders that do not exist yet: the
    ledger creates them) and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/not/yet/there/ledger.db"
    return await fresh_database(request.getfixturevalue("pg_dsn"))
