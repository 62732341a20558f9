"""The admin API (/admin/…): virtual keys and cost reports, guarded by the admin key."""

from __future__ import annotations

import hmac
import os

from fastapi import APIRouter, Depends, Request

from spillgate.accounting.keys_cli import admin_keys_router
from spillgate.accounting.report_cli import admin_report_router
from spillgate.errors import AuthenticationFailed, PermissionDenied


async def require_admin(request: Request) -> None:
    env_name: str = request.app.state.settings.server.admin_key_env
    expected = os.environ.get(env_name, "")
    if not expected:
        raise PermissionDenied(f"the admin API is disabled: set {env_name} to enable it")
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(secret.strip().encode(),
                                                             expected.encode()):
        raise AuthenticationFailed("admin key required: Authorization: Bearer <admin key>")


def build_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_admin)])
    router.include_router(admin_keys_router())
    router.include_router(admin_report_router())
    return router
