"""GET /admin/report/arms: the canary comparison (reports/arms.py) of a window, as JSON,
HTML or Markdown. Behind the admin key, like the cost report."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from spillgate.api.admin_reports import REPORT_MEDIA_TYPES, _ledger_and_prices, report_window
from spillgate.errors import InvalidRequest
from spillgate.reports.arms import read_arms, render_arms

ARM_FORMATS = ("json", "html", "md")


def admin_arms_router() -> APIRouter:
    router = APIRouter()

    @router.get("/admin/report/arms")
    async def admin_arms(request: Request, since: str = "7d", until: str | None = None,
                         format: str = "json") -> Response:
        start, end, _ = report_window(since, until, None, datetime.now(UTC))
        if format not in ARM_FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(ARM_FORMATS)}",
                                 param="format")
        ledger, _ = _ledger_and_prices(request.app.state)
        async with ledger.reading() as conn:
            arms = await read_arms(conn, start, end)
        return Response(render_arms(arms, format, start, end),
                        media_type=REPORT_MEDIA_TYPES[format])

    return router
