"""The /admin/keys routes: thin, they parse, call spillgate.tenancy.keys and return JSON.

The secret of a new key is returned once and never again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from spillgate.api.deps import read_body
from spillgate.errors import InvalidRequest, NotFound, ServiceUnavailable
from spillgate.tenancy.keys import KeyStore

# An admin body is a few hundred bytes; anything far larger is refused before it is buffered.
ADMIN_MAX_BODY_BYTES = 64 * 1024


# --- /admin/keys --------------------------------------------------------------------------
class KeyCreate(BaseModel):
    """POST /admin/keys body. Amounts are USD (JSON numbers or decimal strings)."""

    name: str = Field(min_length=1, max_length=256, description="Who or what the key is for.")
    daily_budget_usd: Decimal | None = Field(None, ge=0, description="Paid USD per UTC day.")
    monthly_budget_usd: Decimal | None = Field(None, ge=0, description="Paid USD per month.")
    rpm: int | None = Field(None, ge=0, description="Requests per minute, all replicas together.")
    tpm: int | None = Field(None, ge=0, description="Tokens per minute, all replicas together.")
    local_only: bool = Field(False, description="Every request is treated as sensitive.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags kept on the key.")
    cache_namespace: str | None = Field(
        None, max_length=128, description="Keys with the same namespace share response-cache "
        "entries; unset: the key's entries are its own.")


def key_create_body(raw: bytes) -> KeyCreate:
    """Parse a POST /admin/keys body; a 400 names the field, never echoes the input."""
    try:
        return KeyCreate.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"invalid body: {field or 'body'}: {first['msg']}",
                             param=field) from None


def _keys_of(request: Request) -> KeyStore:
    """`app.state.keys`, or the accountant's key store (how create_app joins them)."""
    state = request.app.state
    keys = getattr(state, "keys", None)
    accountant = getattr(state, "accountant", None)
    if keys is None and accountant is not None:
        try:
            keys = accountant.keys
        except RuntimeError:  # not open yet
            keys = None
    if not isinstance(keys, KeyStore):
        raise ServiceUnavailable("the cost ledger is not open")
    return keys


def admin_keys_router() -> APIRouter:
    """POST/GET /admin/keys, DELETE /admin/keys/{key_id}; mount behind the admin-key check."""
    router = APIRouter()

    @router.post("/admin/keys", status_code=201)
    async def create(request: Request) -> dict[str, Any]:
        # The body is read here, not declared as a parameter: FastAPI reads declared bodies
        # before it runs the router's admin-key dependency, so a caller without the key
        # could make the node buffer any amount. Here the key is checked first, then at
        # most ADMIN_MAX_BODY_BYTES are read.
        body = key_create_body(await read_body(request, ADMIN_MAX_BODY_BYTES))
        try:
            info, secret = await _keys_of(request).create(**body.model_dump())
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        return {"key": info.to_json(), "secret": secret}

    @router.get("/admin/keys")
    async def listing(request: Request, include_revoked: bool = False) -> dict[str, Any]:
        keys = await _keys_of(request).list(include_revoked=include_revoked)
        return {"data": [k.to_json() for k in keys]}

    @router.delete("/admin/keys/{key_id}")
    async def revoke(request: Request, key_id: str) -> dict[str, Any]:
        if not await _keys_of(request).revoke(key_id):
            raise NotFound(f"no live key {key_id!r}", param="key_id", code="key_not_found")
        return {"key_id": key_id, "revoked": True}

    return router
