"""`ledger:` where the cost ledger lives and this node's name in it."""

from __future__ import annotations

from pydantic import Field

from spillgate.config.base import StrictModel


class LedgerSettings(StrictModel):
    dsn: str = Field(
        "sqlite+aiosqlite:///var/spillgate.db",
        description="SQLAlchemy async DSN. SQLite (WAL) for one node; postgresql+asyncpg://… "
        "for several replicas.",
    )
    dsn_env: str | None = Field(None, description="Env var holding the DSN (overrides `dsn`).")
    node_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="This process's name in the shared ledger (its rows, reservations and "
        "hardware periods; start-up recovery closes only its own open rows at once). "
        "Default: the host name. Give each replica on one host its own.",
    )
