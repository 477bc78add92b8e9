"""Who may read and who may administer: bearer tokens for people and tools, never node credentials.

- Reader routes (``/api/nodes``, ``/api/readings``): ``Authorization: Bearer <read token>`` or the
  admin token, or the status page's cookie (``tswarm_read``, set by ``/?token=...``: service/web.py),
  which carries the read token. The read token is ``TSWARM_READ_TOKEN``, or, when that is empty,
  the one the first ``serve`` made and keeps in the data dir (service/tokens.py). Only in that
  second case are loopback clients served without a token (a request that came through a proxy,
  i.e. carries ``Forwarded``/``X-Forwarded-For``, does not count as loopback), so ``make run`` and
  the README's curl tour work on the machine itself while the LAN needs the token.
- Admin routes (``/api/admin/...``): ``Authorization: Bearer <TSWARM_ADMIN_TOKEN>``; with no
  admin token configured they answer 404 (they are off).
- Node credentials (``Basic``) get 403 on both: a node can only write its own readings. (Admin
  routes that are off answer 404 before any credential is looked at, node credentials too.)

Tokens are compared in constant time and never logged. Wrong tokens (header, cookie or
``/?token=``) count as failed logins of the client's address (the same guard as the node protocol: too many and it gets 429).
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
from typing import Awaitable, Callable, Optional

from aiohttp import web

from . import keys
from .auth import too_many_failures
from .errors import json_error

BEARER_REALM = 'Bearer realm="tswarm"'
COOKIE = "tswarm_read"  # the status page's: HttpOnly, SameSite=Strict, holds the read token
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an unset (empty) token never matches."""
    # a header's bytes that are not UTF-8 arrive as surrogate escapes (aiohttp's decoding): they never match
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def is_loopback_client(request: web.Request) -> bool:
    """The TCP peer is this machine and no proxy forwarded the request."""
    if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
        return False
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def read_token(app: web.Application) -> str:
    """The token that lets a request read: the configured one, else the one kept in the data dir."""
    return app[keys.CONFIG].read_token or app.get(keys.KEPT_READ_TOKEN, "")


def refuse_blocked(request: web.Request) -> Optional[web.Response]:
    """429 while the client's address has failed too often, else None."""
    wait = request.app[keys.GUARD].retry_after(request.remote or "unknown")
    if wait:
        refused = too_many_failures(wait)
        return json_error(refused.status, refused.error, refused.detail, headers=refused.headers)
    return None


def failed_login(request: web.Request) -> None:
    request.app[keys.GUARD].failed(request.remote or "unknown")


def _scheme_and_value(request: web.Request) -> tuple[str, str]:
    header = request.headers.get("Authorization", "").strip()
    scheme, _, value = header.partition(" ")
    return scheme.lower(), value.strip()


def _refuse(request: web.Request, role: str) -> Optional[web.Response]:
    """None when the request may go on as ``role`` ("reader" or "admin"), else the answer."""
    config = request.app[keys.CONFIG]
    if role == "admin" and not config.admin_token:
        return json_error(404, "admin_disabled", "admin routes are off; set TSWARM_ADMIN_TOKEN to turn them on")
    scheme, value = _scheme_and_value(request)
    if scheme == "basic":
        return json_error(403, "node_credentials", "node credentials open only the node's own /api/nodes/NAME"
                          " routes (its readings, its updates, a master's /swarm); use a bearer token")
    blocked = refuse_blocked(request)
    if blocked:
        return blocked
    reader_token = read_token(request.app)
    if scheme == "bearer":
        if token_matches(value, config.admin_token):
            return None
        if token_matches(value, reader_token):
            if role == "reader":
                return None
            return json_error(403, "read_only", "the read token cannot administer; use TSWARM_ADMIN_TOKEN")
        failed_login(request)
        return _unauthorized("wrong token")
    if scheme:
        return _unauthorized("send 'Authorization: Bearer <token>'")
    if role == "reader":
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:  # first, also from loopback: a stale cookie is deleted, not kept for ever
            if token_matches(cookie, reader_token):
                return None
            failed_login(request)
            response = _unauthorized("the page's token cookie is not this service's read token; open the page's URL with ?token= again")
            response.del_cookie(COOKIE, path="/")
            return response
        if not config.read_token and is_loopback_client(request):
            return None
        return _unauthorized(
            "send 'Authorization: Bearer <token>' with the read token: TSWARM_READ_TOKEN, or when that is"
            " empty the one `tswarm serve` keeps in its data dir (read-token), or the admin token"
        )
    return _unauthorized("send 'Authorization: Bearer <token>' with TSWARM_ADMIN_TOKEN")


def _unauthorized(detail: str) -> web.Response:
    return json_error(401, "unauthorized", detail, headers={"WWW-Authenticate": BEARER_REALM})


def readers_only(handler: Handler) -> Handler:
    """Wrap a reader route's handler: refuse early unless the request may read."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        return _refuse(request, "reader") or await handler(request)

    return guarded


def admins_only(handler: Handler) -> Handler:
    """Wrap an admin route's handler: refuse early unless the request carries the admin token."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        return _refuse(request, "admin") or await handler(request)

    return guarded
