"""``GET /``: the status page, served by the service itself from ``service/static/``.

The page is static (HTML, CSS, JS and uPlot, the charting library, shipped in the package so
it works offline); it reads ``/api/nodes`` and ``/api/readings`` like any other reader and
asks for the read token only when one of them answers 401.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"


async def status_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_static("/static/", STATIC_DIR)
