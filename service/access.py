"""Who may read and who may administer: bearer tokens for people and tools, never node credentials.

- Reader routes (``/api/nodes``, ``/api/readings``): ``Authorization: Bearer <TSWARM_READ_TOKEN>``
  or the admin token. With no read token configured, readers are served to loopback clients
  only (a request that came through a proxy, i.e. carries ``Forwarded``/``X-Forwarded-For``,
  does not count as loopback), so ``make run`` shows everything locally and nothing outside.
- Admin routes (``/api/admin/...``): ``Authorization: Bearer <TSWARM_ADMIN_TOKEN>``; with no
  admin token configured they answer 404 (they are off).
- Node credentials (``Basic``) get 403 on both: a node can only write its own readings. (Admin
  routes that are off answer 404 before any credential is looked at, node credentials too.)

Tokens are compared in constant time and never logged. Wrong tokens count as failed logins
of the client's address (the same guard as the node protocol: too many and it gets 429).
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
from typing import Awaitable, Callable, Optional

from aiohttp import web

from . import keys
from .errors import json_error

BEARER_REALM = 'Bearer realm="tswarm"'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an unset (empty) token never matches."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_loopback_client(request: web.Request) -> bool:
    """The TCP peer is this machine and no proxy forwarded the request."""
    if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
        return False
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


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
        return json_error(403, "node_credentials", "node credentials can only send readings; use a bearer token")
    guard = request.app[keys.GUARD]
    peer = request.remote or "unknown"
    wait = guard.retry_after(peer)
    if wait:
        return json_error(
            429, "too_many_failures", f"too many failed logins from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if scheme == "bearer":
        if token_matches(value, config.admin_token):
            return None
        if token_matches(value, config.read_token):
            if role == "reader":
                return None
            return json_error(403, "read_only", "the read token cannot administer; use TSWARM_ADMIN_TOKEN")
        guard.failed(peer)
        return _unauthorized("wrong token")
    if scheme:
        return _unauthorized("send 'Authorization: Bearer <token>'")
    if role == "reader" and not config.read_token and is_loopback_client(request):
        return None
    what = "TSWARM_READ_TOKEN (or the admin token)" if role == "reader" else "TSWARM_ADMIN_TOKEN"
    return _unauthorized(f"send 'Authorization: Bearer <token>' with {what}")


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
