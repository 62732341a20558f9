"""GET /admin/report: the cost report of a window, as JSON, HTML, Markdown or CSV.

Thin: parse the window, then `reports.gather.gather_report` (shared with `spillgate report`)
in a worker thread.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from spillgate.costing.pricing import PriceBook
from spillgate.errors import InvalidRequest, ServiceUnavailable
from spillgate.reports.figures import Bucket, WindowTooLarge, check_window
from spillgate.reports.gather import ReportSources, Window, auto_bucket, gather_report, parse_when
from spillgate.reports.render import render_report


# --- GET /admin/report --------------------------------------------------------------------
def _ledger_and_prices(state: Any) -> tuple[Any, PriceBook]:
    """`app.state.ledger`/`price_book`, or the accountant's (how create_app joins them).
    The ledger is read through its `engine`'s DSN."""
    accountant = getattr(state, "accountant", None)
    ledger = getattr(state, "ledger", None) or getattr(accountant, "ledger", None)
    book = getattr(state, "price_book", None) or getattr(accountant, "prices", None)
    if ledger is None or not isinstance(book, PriceBook):
        raise ServiceUnavailable("the cost ledger is not open")
    return ledger, book


REPORT_MEDIA_TYPES = {
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}


def report_window(since: str, until: str | None, bucket: str | None,
                  now: datetime) -> tuple[datetime, datetime, Bucket]:  # fmt: skip
    """The query's window, or InvalidRequest naming the parameter at fault."""
    try:
        start = parse_when(since, now)
        end = parse_when(until, now) if until else now
    except ValueError as exc:  # the CLI echoes the text; an HTTP answer never echoes input
        raise InvalidRequest("since/until: expected a duration (7d, 12h) or an ISO time",
                             param="since/until") from exc
    if end <= start:
        raise InvalidRequest("until must be after since", param="until")
    if bucket not in (None, "hour", "day"):
        raise InvalidRequest("bucket must be hour or day", param="bucket")
    step: Bucket = bucket or auto_bucket(start, end)  # type: ignore[assignment]
    try:
        check_window(start, end, step)
    except WindowTooLarge as exc:
        raise InvalidRequest(str(exc), param="since") from exc
    return start, end, step


def admin_report_router(sources: ReportSources | None = None) -> APIRouter:
    """GET /admin/report?since=7d&until=&bucket=&format=json|html|md|csv → the report.

    Reads the ledger and price book from app.state (see `_ledger_and_prices`); profile and
    reference model come from `sources`, else from `app.state.settings`. The report is read
    and rendered in a worker thread with its own connections (report_query.report_off_loop):
    the event loop only waits for it. Mount it behind the admin-key check.
    """
    router = APIRouter()

    @router.get("/admin/report")
    async def admin_report(
        request: Request,
        since: str = "7d",
        until: str | None = None,
        bucket: str | None = None,
        format: str = "json",
    ) -> Response:
        start, end, step = report_window(since, until, bucket, datetime.now(UTC))
        if format not in REPORT_MEDIA_TYPES:
            raise InvalidRequest(f"format must be one of {', '.join(REPORT_MEDIA_TYPES)}",
                                 param="format")  # fmt: skip
        ledger, book = _ledger_and_prices(request.app.state)
        src = sources or ReportSources.from_settings(request.app.state.settings)

        dsn = ledger.engine.url.render_as_string(hide_password=False)
        text = await asyncio.to_thread(
            gather_report, dsn, Window(start, end, step), book, src,
            lambda report: render_report(report, format))
        return Response(text, media_type=REPORT_MEDIA_TYPES[format])

    return router
