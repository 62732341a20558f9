"""The ledger's tables (SQLAlchemy Core), portable between SQLite and PostgreSQL.

Conventions every reader of these tables can rely on:

- Timestamps are timezone-aware UTC `datetime`s in Python on both databases
  (`UTCDateTime`: `timestamptz` on PostgreSQL; naive-UTC ISO text on SQLite, given back aware).
- Money is `Decimal` in Python, exact on both databases (`Money`): `numeric(20, 10)` on
  PostgreSQL; on SQLite, whose NUMERIC is a float, an INTEGER count of 1e-10 USD, so that the
  budget arithmetic done inside SQL (`spent + reserved + :amount <= limit`) stays exact.
  Values finer than 1e-10 USD are rounded half-even, as numeric(20, 10) does.
  Reading SQLite money columns with raw sqlite3 therefore gives units of 1e-10 USD.
- `tags` is a JSON object str -> str; `sensitivity` is the comma-separated entity classes
  found ("" = not sensitive), never the values themselves. No prompt or completion text is
  stored anywhere.
- `requests.state`: 'open' (begun, not finished), 'settled' (finished normally), 'voided'
  (finished without consuming anything: an error before any backend produced tokens),
  'recovered' (left open by a crashed process, closed by `Ledger.recover`).
- `budget_counters.period` is 'day:YYYY-MM-DD' or 'month:YYYY-MM' (UTC).
- `budget_reservations` holds one row per paid request whose worst-case cost is reserved and
  not yet settled; settling deletes it, which makes settle and crash recovery idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
)
from sqlalchemy.types import DateTime, TypeDecorator, TypeEngine

from spillgate.ledger.record import MONEY_SCALE, ledger_money

if TYPE_CHECKING:
    from spillgate.ledger.record import RequestRecord


class Money(TypeDecorator[Decimal]):
    """Exact USD amounts: numeric(20, 10), or integer 1e-10 units on SQLite (see module doc)."""

    impl = Numeric(20, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return money_units(value)
        return ledger_money(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_SCALE)
        return Decimal(value)


def money_units(value: Any) -> int:
    """An amount as SQLite stores it: a count of 1e-10 USD (see the module doc)."""
    if value == 0:  # most of a row's amounts are zero: no quantizing (what is not a
        return 0  # number, "" included, still fails below as it did)
    return int(ledger_money(Decimal(value)).scaleb(MONEY_SCALE))


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; naive values going in are taken as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("node_id", String(128), nullable=False, default=""),  # process that began it
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),  # null while open
    Column("key_id", String(64)),  # null: anonymous or a static key
    Column("tags", JSON(), nullable=False, default=dict),
    Column("route", String(128), nullable=False, default=""),
    Column("reason", String(64), nullable=False, default=""),  # routing reason code
    Column("backend", String(128), nullable=False, default=""),
    Column("tier", String(8), nullable=False, default="local"),  # 'local' | 'api'
    Column("model", String(256), nullable=False, default=""),
    Column("stream", Boolean(), nullable=False, default=False),
    Column("prompt_tokens", Integer(), nullable=False, default=0),
    Column("cached_tokens", Integer(), nullable=False, default=0),
    Column("completion_tokens", Integer(), nullable=False, default=0),
    Column("cache_write_tokens", Integer(), nullable=False, default=0,
           server_default="0"),  # of prompt_tokens
    Column("ttft_ms", Float()),
    Column("latency_ms", Float()),
    Column("status", Integer()),  # HTTP status; null while open
    Column("sensitivity", String(512), nullable=False, default=""),
    Column("cost_usd", Money(), nullable=False, default=Decimal(0)),
    Column("cost_kind", String(8), nullable=False, default="local"),  # 'api' | 'local'
    Column("counterfactual_usd", Money(), nullable=False, default=Decimal(0)),
    Column("usage_source", String(16), nullable=False, default="measured"),  # | 'estimated'
    Column("reserved_usd", Money(), nullable=False, default=Decimal(0)),
    Column("state", String(16), nullable=False, default="open"),
    # added in migration 6: canary arm, cascade draft, client feedback (issue 15)
    # server defaults too, so rows written by an older node's INSERT still fit
    Column("arm", String(64), nullable=False, default="",
           server_default=""),  # "" = the route is not split
    Column("draft_usd", Money(), nullable=False, default=Decimal(0),
           server_default="0"),  # cascade: the local draft
    Column("confidence", Float()),  # cascade: the draft's confidence signal
    Column("feedback", Float()),  # the client's score in [0, 1]; null = not rated
    Column("feedback_at", UTCDateTime()),
    # added in migration 7: a response-cache hit ('exact' | 'semantic', "" = not a hit), the
    # tokens it saved and the cost it avoided (the original answer's cost)
    Column("cache", String(16), nullable=False, default="", server_default=""),
    Column("saved_tokens", Integer(), nullable=False, default=0, server_default="0"),
    Column("avoided_usd", Money(), nullable=False, default=Decimal(0), server_default="0"),
    Index("ix_requests_started_at", "started_at"),
    Index("ix_requests_key_id", "key_id"),
    Index("ix_requests_state", "state"),
)

hardware_periods = Table(
    "hardware_periods",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("node_id", String(128), nullable=False, default=""),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime(), nullable=False),
    Column("busy_s", Float(), nullable=False, default=0.0),
    Column("idle_s", Float(), nullable=False, default=0.0),
    Column("busy_usd", Money(), nullable=False, default=Decimal(0)),
    Column("idle_usd", Money(), nullable=False, default=Decimal(0)),
    Column("power_watts", Float()),  # time-weighted mean; null when never measured
    Column("profile", String(128), nullable=False, default=""),
    # added in migration 2: which power priced the energy, and busy time of other clients
    Column("measured_s", Float(), nullable=False, default=0.0),  # the rest: nominal watts
    Column("external_s", Float(), nullable=False, default=0.0),
    Column("unattributed_usd", Money(), nullable=False, default=Decimal(0)),
    Index("ix_hardware_periods_started_at", "started_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),  # short public id
    Column("name", String(256), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("prefix", String(16), nullable=False),  # first characters, for display
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("daily_budget_usd", Money()),  # null = unlimited
    Column("monthly_budget_usd", Money()),
    Column("rpm", Integer()),  # null = unlimited
    Column("tpm", Integer()),
    Column("local_only", Boolean(), nullable=False, default=False),
    Column("tags", JSON(), nullable=False, default=dict),
    # added in migration 7: keys sharing a namespace share response-cache entries
    Column("cache_namespace", String(128)),
)

budget_counters = Table(
    "budget_counters",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),  # 'day:2026-11-22' | 'month:2026-11'
    Column("limit_usd", Money(), nullable=False),
    Column("spent_usd", Money(), nullable=False, default=Decimal(0)),
    Column("reserved_usd", Money(), nullable=False, default=Decimal(0)),
)

budget_reservations = Table(
    "budget_reservations",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("day_period", String(16)),  # null: the key has no daily budget
    Column("month_period", String(16)),
    Column("amount_usd", Money(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("node_id", String(128), nullable=False, default=""),
    Index("ix_budget_reservations_created_at", "created_at"),
)

# added in migration 4: the RPM/TPM sliding window of each key, shared by the replicas of a
# PostgreSQL ledger (tenancy/shared_limits.py); a row per admitted request, kept for 60 s
rate_events = Table(
    "rate_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=True),
    Column("key_id", String(64), nullable=False),
    Column("at", Float(), nullable=False),  # seconds since the epoch, the database's clock
    Column("tokens", Integer(), nullable=False),
    Index("ix_rate_events_key_at", "key_id", "at"),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer(), primary_key=True),
    Column("applied_at", UTCDateTime(), nullable=False),
)


# --- the shapes of a `requests` row the ledger writes --------------------------------------
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RequestStart:
    """What is known when a request is routed: its 'open' row."""

    request_id: str
    started_at: datetime
    key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    route: str = ""
    reason: str = ""
    backend: str = ""
    tier: str = "local"
    model: str = ""
    stream: bool = False
    sensitivity: str = ""  # comma-separated entity classes, "" = not sensitive
    reserved_usd: Decimal = ZERO
    arm: str = ""

    @classmethod
    def from_record(cls, record: RequestRecord) -> RequestStart:
        return cls(
            request_id=record.request_id,
            started_at=datetime.fromtimestamp(record.started_at, UTC),
            key_id=record.key_id,
            tags=record.tags,
            route=record.route,
            reason=record.reason,
            backend=record.backend,
            tier="cache" if record.cache else record.tier,  # a hit reached no tier
            model=record.model,
            stream=record.stream,
            sensitivity=",".join(sorted(record.sensitivity)),
            reserved_usd=record.reserved_usd,
            arm=record.arm,
        )

    def columns(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "started_at": self.started_at,
            "key_id": self.key_id, "tags": dict(self.tags), "route": self.route,
            "reason": self.reason, "backend": self.backend, "tier": self.tier,
            "model": self.model, "stream": self.stream, "sensitivity": self.sensitivity,
            "reserved_usd": self.reserved_usd, "state": "open", "arm": self.arm,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """The final row: the start (possibly updated, e.g. after a fallback) and the outcome.

    state is 'voided' when nothing was consumed (an error status, no tokens, no cost),
    else 'settled'."""

    start: RequestStart
    finished_at: datetime
    status: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cache_write_tokens: int = 0
    ttft_ms: float | None = None
    latency_ms: float | None = None
    cost_usd: Decimal = ZERO
    counterfactual_usd: Decimal = ZERO
    usage_source: str = "measured"  # 'estimated' when the upstream sent no usage
    draft_usd: Decimal = ZERO  # cascade: the local draft's hardware cost
    confidence: float | None = None
    cache: str = ""  # a response-cache hit: 'exact' | 'semantic'
    saved_tokens: int = 0
    avoided_usd: Decimal = ZERO

    @classmethod
    def from_record(cls, record: RequestRecord,
                    finished_at: datetime | None = None) -> RequestOutcome:
        usage = record.usage
        return cls(
            start=RequestStart.from_record(record),
            finished_at=finished_at or datetime.now(UTC),
            status=record.status,
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            ttft_ms=None if record.ttft_s is None else record.ttft_s * 1000.0,
            latency_ms=None if record.latency_s is None else record.latency_s * 1000.0,
            cost_usd=record.cost_usd,
            counterfactual_usd=record.counterfactual_usd,
            usage_source="measured" if usage.measured else "estimated",
            draft_usd=record.draft_usd,
            confidence=record.confidence,
            cache=record.cache, saved_tokens=record.saved_tokens, avoided_usd=record.avoided_usd,
        )

    @property
    def state(self) -> str:
        consumed = self.prompt_tokens or self.completion_tokens or self.cost_usd
        return "voided" if self.status >= 400 and not consumed else "settled"

    def columns(self) -> dict[str, Any]:
        row = self.start.columns()
        row.update(
            finished_at=self.finished_at, status=self.status,
            prompt_tokens=self.prompt_tokens, cached_tokens=self.cached_tokens,
            completion_tokens=self.completion_tokens,
            cache_write_tokens=self.cache_write_tokens, ttft_ms=self.ttft_ms,
            latency_ms=self.latency_ms, cost_usd=self.cost_usd,
            cost_kind="api" if self.start.tier == "api" else "local",
            counterfactual_usd=self.counterfactual_usd, usage_source=self.usage_source,
            state=self.state, draft_usd=self.draft_usd, confidence=self.confidence,
            cache=self.cache, saved_tokens=self.saved_tokens, avoided_usd=self.avoided_usd,
        )  # fmt: skip
        return row
