"""Virtual API keys (stored hashed in the ledger); their RPM/TPM limiter is limits.py.

A secret looks like `sg-` + 40 url-safe characters. Only its SHA-256 is stored: the secret
is shown once, by `create_key`, and cannot be recovered. SHA-256 (not a slow password hash)
is right here because the secret is 240 random bits, not a guessable password, and it is
checked on every request.

`KeyStore.authenticate` caches each answer for KEY_CACHE_TTL_S (unknown secrets for
less), so the request path reaches the database at most once per key every few seconds.
A revocation is immediate on the replica that made it and takes up to that TTL elsewhere.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cachetools import TLRUCache
from sqlalchemy import insert, select, update

from spillgate.ledger.schema import api_keys

if TYPE_CHECKING:
    from spillgate.ledger.store import Ledger

SECRET_PREFIX = "sg-"
KEY_CACHE_TTL_S = 5.0
UNKNOWN_KEY_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    prefix: str  # the secret's first characters, to recognise it in a list
    created_at: datetime
    revoked_at: datetime | None = None
    daily_budget_usd: Decimal | None = None  # None = unlimited
    monthly_budget_usd: Decimal | None = None
    rpm: int | None = None
    tpm: int | None = None
    local_only: bool = False  # every request of this key is treated as sensitive
    tags: Mapping[str, str] = field(default_factory=dict)
    cache_namespace: str | None = None  # keys sharing one share response-cache entries

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> KeyInfo:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name in row})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: money as exact decimal strings, times as ISO 8601."""
        def money(v: Decimal | None) -> str | None:
            return None if v is None else format(v.normalize(), "f")

        return {
            "key_id": self.key_id, "name": self.name, "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "daily_budget_usd": money(self.daily_budget_usd),
            "monthly_budget_usd": money(self.monthly_budget_usd),
            "rpm": self.rpm, "tpm": self.tpm, "local_only": self.local_only,
            "tags": dict(self.tags), "cache_namespace": self.cache_namespace,
        }  # fmt: skip


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _positive(name: str, value: Decimal | int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0")


async def create_key(
    ledger: Ledger,
    name: str,
    *,
    daily_budget_usd: Decimal | None = None,
    monthly_budget_usd: Decimal | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    local_only: bool = False,
    tags: Mapping[str, str] | None = None,
    cache_namespace: str | None = None,
    now: datetime | None = None,
) -> tuple[KeyInfo, str]:
    """Store a new key; returns it and its secret (the only time the secret is available)."""
    for label, value in (("daily_budget_usd", daily_budget_usd),
                         ("monthly_budget_usd", monthly_budget_usd), ("rpm", rpm),
                         ("tpm", tpm)):
        _positive(label, value)
    if not name.strip():
        raise ValueError("a key needs a name")
    secret = SECRET_PREFIX + secrets.token_urlsafe(30)
    info = KeyInfo(
        key_id="key-" + secrets.token_hex(6), name=name.strip(), prefix=secret[:10],
        created_at=now or ledger.now(), daily_budget_usd=daily_budget_usd,
        monthly_budget_usd=monthly_budget_usd, rpm=rpm, tpm=tpm, local_only=local_only,
        tags=dict(tags or {}), cache_namespace=(cache_namespace or "").strip() or None,
    )
    values = {name: getattr(info, name) for name in KeyInfo.__dataclass_fields__}
    values["tags"] = dict(info.tags)
    async with ledger.transaction() as conn:
        await conn.execute(insert(api_keys).values(key_hash=hash_secret(secret), **values))
    return info, secret


async def live_keys_exist(ledger: Ledger) -> bool:
    """Whether any virtual key is live: from then on anonymous loopback access ends (unless
    configured otherwise), or a client could drop its key to escape the key's limits."""
    query = select(api_keys.c.key_id).where(api_keys.c.revoked_at.is_(None)).limit(1)
    async with ledger.reading() as conn:
        return (await conn.execute(query)).first() is not None


async def list_keys(ledger: Ledger, *, include_revoked: bool = False) -> list[KeyInfo]:
    query = select(api_keys).order_by(api_keys.c.created_at)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with ledger.reading() as conn:
        return [KeyInfo.from_row(row._mapping) for row in await conn.execute(query)]


async def revoke_key(ledger: Ledger, key_id: str, now: datetime | None = None) -> bool:
    """Revoke a live key; False if there is no such live key. Caches elsewhere (this
    replica's `KeyStore` or another's) forget it within KEY_CACHE_TTL_S; use
    `KeyStore.revoke` to make it immediate here."""
    stmt = (update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now or ledger.now()))
    async with ledger.transaction() as conn:
        return (await conn.execute(stmt)).rowcount == 1


class _Miss:
    """Marks a cache miss (None is a cached answer: an unknown secret)."""


_MISS = _Miss()


def _time_to_use(_digest: str, info: KeyInfo | None, now: float) -> float:
    return now + (KEY_CACHE_TTL_S if info is not None else UNKNOWN_KEY_TTL_S)


class KeyStore:
    """The keys of one ledger plus this replica's cache of `authenticate` answers.

    The cache lives here, not on the ledger: the ledger stores rows, the key store decides
    who a secret belongs to (and the ledger never imports tenancy)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        # Known keys for KEY_CACHE_TTL_S, unknown secrets (None) for UNKNOWN_KEY_TTL_S.
        self._cache: TLRUCache[str, KeyInfo | None] = TLRUCache(10_000, _time_to_use)

    async def authenticate(self, secret: str) -> KeyInfo | None:
        """The live (not revoked) key with this secret, or None. Cached; see the module
        docstring."""
        if not secret.startswith(SECRET_PREFIX):
            return None  # not one of ours: no database work for static keys or garbage
        digest = hash_secret(secret)
        hit = self._cache.get(digest, _MISS)
        if not isinstance(hit, _Miss):
            return hit
        async with self.ledger.reading() as conn:
            query = select(api_keys).where(api_keys.c.key_hash == digest)
            row = (await conn.execute(query)).first()
        info = KeyInfo.from_row(row._mapping) if row is not None else None
        if info is not None and info.revoked_at is not None:
            info = None
        self._cache[digest] = info
        return info

    async def create(self, name: str, **limits: Any) -> tuple[KeyInfo, str]:
        return await create_key(self.ledger, name, **limits)

    async def list(self, *, include_revoked: bool = False) -> list[KeyInfo]:
        return await list_keys(self.ledger, include_revoked=include_revoked)

    async def revoke(self, key_id: str, now: datetime | None = None) -> bool:
        """Revoke a live key; immediate on this replica (the cache is dropped)."""
        done = await revoke_key(self.ledger, key_id, now)
        self._cache.clear()
        return done

    async def live_keys_exist(self) -> bool:
        return await live_keys_exist(self.ledger)
