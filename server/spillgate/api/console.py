"""GET /console: the planner console, a static page served by the node itself.

No build step and nothing from elsewhere: the page, its script and style, and the one vendored
charting library (uPlot, MIT, console/vendor/) ship inside the package. The page is public
(it holds no data); it asks for the admin key, keeps it in sessionStorage only and sends it
as a bearer header to the admin JSON endpoints. A strict Content-Security-Policy allows
nothing but this node: no inline script, no other origin.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from spillgate.errors import NotFound

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
# The only files served, by URL name → (package path, media type): no path from the client.
ASSETS = {
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
    "charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
}


def _read(name: str) -> bytes:
    return resources.files("spillgate.console").joinpath(name).read_bytes()


def build_router() -> APIRouter:
    router = APIRouter()
    page = _read("index.html")
    assets = {url: (_read(path), media) for url, (path, media) in ASSETS.items()}

    @router.get("/console", include_in_schema=False)
    async def console() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    @router.get("/console/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            raise NotFound("no such console file")
        return Response(found[0], media_type=found[1], headers=SECURITY_HEADERS)

    return router

