"""Request-scoped helpers for the thin routes: the node, the caller's identity, the raw body."""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from fastapi import Request

from spillgate.errors import AuthenticationFailed, PayloadTooLarge
from spillgate.service import Node
from spillgate.types import Client

KEYS_EXIST_TTL_S = 1.0


class KeyLookup(Protocol):
    """Resolves a virtual key (issued by the ledger's key store) to a client identity."""

    async def __call__(self, secret: str) -> Client | None: ...


class Authenticator:
    """Static keys from the environment, then virtual keys; anonymous access only where
    `open_access` (a loopback bind without static keys) and, when `keys_exist` is given,
    only while it says no virtual key exists: a key's budget and local_only must not be
    escapable by leaving the key out. `keys_exist` is asked at most once a second."""

    def __init__(self, static_keys: frozenset[str], lookup: KeyLookup | None,
                 open_access: bool,
                 keys_exist: Callable[[], Awaitable[bool]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._static = tuple(k.encode() for k in static_keys)
        self._lookup = lookup
        self._open = open_access
        self._keys_exist = keys_exist
        self._clock = clock
        self._keys_known: tuple[float, bool] = (float("-inf"), True)
        self._probe: asyncio.Future[bool] | None = None

    async def __call__(self, authorization: str | None) -> Client:
        secret = _bearer(authorization)
        if secret:
            if any(hmac.compare_digest(secret.encode(), k) for k in self._static):
                return Client(key_id="static")
            if self._lookup is not None:
                client = await self._lookup(secret)
                if client is not None:
                    return client
        if self._open and not await self._virtual_keys_exist():
            return Client()
        raise AuthenticationFailed(
            "Invalid or missing API key: send `Authorization: Bearer <key>`"
        )

    async def _virtual_keys_exist(self) -> bool:
        if self._keys_exist is None:
            return False
        checked_at, exist = self._keys_known
        if self._clock() - checked_at < KEYS_EXIST_TTL_S:
            return exist
        if self._probe is None:  # one question at a time: concurrent requests share it
            self._probe = asyncio.ensure_future(self._ask(self._keys_exist))
        # Shielded: a client that leaves must not cancel the answer others wait for.
        return await asyncio.shield(self._probe)

    async def _ask(self, keys_exist: Callable[[], Awaitable[bool]]) -> bool:
        try:
            exist = await keys_exist()
            self._keys_known = (self._clock(), exist)
            return exist
        finally:
            self._probe = None


def bearer_matches(header: str | None, expected: str) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    secret = _bearer(header)
    return secret is not None and hmac.compare_digest(secret.encode(), expected.encode())


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def new_request_id() -> str:
    """A fresh id for a request: the ledger row's key, so never taken from the client (a
    reused id would overwrite another request's row). 128 random bits from the process's
    seeded generator: unique in practice, and without a urandom syscall per request."""
    return f"{random.getrandbits(128):032x}"


def request_id_of(request: Request) -> str:
    """A fresh id for this request, kept on request.state for the error handler."""
    rid = new_request_id()
    request.state.request_id = rid
    return rid


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def client_of(request: Request) -> Client:
    auth: Callable[[str | None], Awaitable[Client]] = request.app.state.authenticate
    return await auth(request.headers.get("authorization"))


async def read_body(request: Request, cap: int) -> bytes:
    """The body, refused with 413 before parsing when it exceeds the cap."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"request body exceeds the {cap}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"request body exceeds the {cap}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
