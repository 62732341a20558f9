"""The admin API (/admin/…): virtual keys, cost reports, live state and the plan calculator,
guarded by the admin key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from spillgate.api.admin_arms import admin_arms_router
from spillgate.api.admin_keys import admin_keys_router
from spillgate.api.admin_live import admin_live_router
from spillgate.api.admin_plan import admin_plan_router
from spillgate.api.admin_reports import admin_report_router
from spillgate.api.deps import bearer_matches
from spillgate.errors import AuthenticationFailed, PermissionDenied
from spillgate.settings import MIN_KEY_LENGTH, Settings, key_problem


async def require_admin(request: Request) -> None:
    """Runs before any admin route reads its body (see admin_keys.create)."""
    settings: Settings = request.app.state.settings
    env_name = settings.server.admin_key_env
    expected = settings.admin_key()
    if not expected or key_problem(expected):
        raise PermissionDenied(f"the admin API is disabled: set {env_name} to a key of at "
                               f"least {MIN_KEY_LENGTH} characters to enable it")
    if not bearer_matches(request.headers.get("authorization"), expected):
        raise AuthenticationFailed("admin key required: Authorization: Bearer <admin key>")


def build_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_admin)])
    router.include_router(admin_keys_router())
    router.include_router(admin_report_router())
    router.include_router(admin_live_router())
    router.include_router(admin_plan_router())
    router.include_router(admin_arms_router())
    return router
