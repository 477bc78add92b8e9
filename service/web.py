"""``GET /``: the status page, served by the service itself from ``service/static/``.

The page is static (HTML, CSS, JS and uPlot, the charting library, shipped in the package so
it works offline); it reads ``/api/nodes`` and ``/api/readings`` like any other reader and
asks for the read token only when one of them answers 401.

``GET /?token=<read token>`` is the link ``tswarm serve`` prints (service/tokens.py): it sets the
reader cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) and redirects to ``/`` without the
token, so the token is left neither in the browser's history nor in a bookmark. A wrong token is
a failed login of the client's address (service/access.py). The access log never shows the token:
service/server.py's access logger masks the value of ``token=`` (and of every secret-looking name).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from . import access, keys
from .errors import json_error
from .tokens import kept_read_token

STATIC_DIR = Path(__file__).parent / "static"
# What /static/ serves: the files shipped in service/static/, by their paths there (any other path is
# a JSON 404, as every error: aiohttp's own static route answers a missing file with an empty body)
STATIC_FILES = {path.relative_to(STATIC_DIR).as_posix(): path for path in STATIC_DIR.rglob("*") if path.is_file()}
COOKIE_MAX_AGE = 400 * 86400  # the longest browsers keep a cookie; the token lasts until its file is deleted
NO_REFERRER = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


async def status_page(request: web.Request) -> web.StreamResponse:
    if "token" in request.query:
        return page_login(request, request.query["token"])
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.StreamResponse:
    path = STATIC_FILES.get(request.match_info["path"])
    if path is None:
        return json_error(404, "not_found", "no such file of the status page")
    return web.FileResponse(path)


def page_login(request: web.Request, token: str) -> web.Response:
    """``/?token=...``: the cookie and a redirect to the page without the token, or a failed login."""
    blocked = access.refuse_blocked(request)
    if blocked:
        return blocked
    if not access.token_matches(token, access.read_token(request.app)):
        access.failed_login(request)
        return json_error(
            401, "unauthorized",
            "that is not this service's read token (TSWARM_READ_TOKEN, or when that is empty the one kept in"
            " the data dir's read-token file); `tswarm serve` prints the page's URL with it the first time",
            headers={**NO_REFERRER, "WWW-Authenticate": access.BEARER_REALM},  # as every 401 (RFC 9110 15.5.2)
        )
    rest = request.rel_url.query.copy()
    rest.popall("token")
    # the rest of the query as sent, percent-encoded: decoded (path_qs), a %0D%0A or a non-ASCII
    # character would be put in the header as is (a 500 from aiohttp's header-injection check)
    location = request.rel_url.with_query(rest).raw_path_qs
    response = web.Response(status=303, headers={"Location": location, **NO_REFERRER})
    response.set_cookie(
        access.COOKIE, token, max_age=COOKIE_MAX_AGE, path="/", httponly=True, samesite="Strict",
        secure=request.secure,
    )
    return response


async def keep_read_token(app: web.Application) -> None:
    """At start (service/app.py), with no TSWARM_READ_TOKEN: the kept token (the data dir's, or the
    database's with PostgreSQL; made here if `serve` did not make it)."""
    if not app[keys.CONFIG].read_token:
        app[keys.KEPT_READ_TOKEN], _ = await asyncio.to_thread(kept_read_token, app[keys.CONFIG])


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_get("/static/{path:.+}", static_file)
