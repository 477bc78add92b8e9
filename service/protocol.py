"""The node protocol (frozen: firmware in the field depends on it).

``PUT``/``POST /api/nodes/{name}`` with Basic auth and ``{"name", "data"}``. The handler refuses
early, in order: size, address guard, credentials, node state, JSON, values; only a valid
reading reaches the journal, and the 202 (or 423 while halted) comes after its commit.
"""
from __future__ import annotations

import logging
import re

from aiohttp import web

from . import keys
from .auth import BadAuthorization, parse_basic
from .errors import json_error
from .storage import StorageUnavailable
from .payload import PayloadError, parse_body
from .timefmt import rfc3339

log = logging.getLogger("tswarm.protocol")

# Node names: letters, digits, '_', '-', '.', starting with a letter or digit, at most 64.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
NODE_NAME_HELP = "1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"

REALM = 'Basic realm="tswarm"'
RETRY_AFTER_UNAVAILABLE = "30"


def valid_node_name(name: str) -> bool:
    return NODE_NAME.fullmatch(name) is not None


def _unauthorized(detail: str) -> web.Response:
    return json_error(401, "unauthorized", detail, headers={"WWW-Authenticate": REALM})


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is larger than ``limit`` (declared or actual)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def node_reading(request: web.Request) -> web.Response:
    config = request.app[keys.CONFIG]
    name = request.match_info["name"]
    peer = request.remote or "unknown"

    body = await _read_body(request, config.max_body)
    if body is None:
        return json_error(
            413, "too_large", f"body larger than {config.max_body} bytes; a reading is a few dozen",
            headers={"Connection": "close"},
        )
    if not valid_node_name(name):
        return json_error(400, "bad_node_name", f"node names are {NODE_NAME_HELP}")

    guard = request.app[keys.GUARD]
    cache = request.app[keys.CREDENTIALS]
    journal = request.app[keys.JOURNAL]
    header = request.headers.get("Authorization")
    try:
        credentials = parse_basic(header)
        node = journal.node_auth(credentials.login)
    except BadAuthorization as exc:
        credentials, node, problem = None, None, str(exc)
    else:
        problem = "unknown login or wrong password"

    # A blocked address may still send a header that already verified (a valid node behind the same
    # NAT as a guesser): that costs no scrypt and guesses nothing. Anything else waits.
    wait = guard.retry_after(peer)
    if wait and not (node and cache.known(header, node.name, node.password_hash)):
        return json_error(
            429, "too_many_failures", f"too many failed logins from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if node is None or not await cache.verify(
        header, credentials.login, credentials.password, node.password_hash, request.app[keys.HASHER]
    ):
        guard.failed(peer)
        return _unauthorized(problem)
    if credentials.login != name:
        return json_error(403, "wrong_node", "these credentials belong to another node; a node writes only as itself")

    create = request.method == "POST"
    if not node.created and not create:
        return json_error(
            405, "node_not_created", "this node was never created; POST the reading to create it",
            headers={"Allow": "POST"},
        )

    try:
        reading = parse_body(body, name)
    except PayloadError as exc:
        return json_error(exc.status, exc.error, exc.detail)

    try:
        ts = await request.app[keys.WRITER].append(node.id, reading.temperature, reading.humidity, create=create)
    except StorageUnavailable as exc:
        log.warning("journal refused a reading from %s: %s", name, exc)
        return json_error(
            503, "journal_unavailable", "the reading could not be stored and was not accepted; retry later",
            headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        )
    request.app[keys.STATS].accepted += 1

    halted = node.halted or config.halt
    if halted:
        return json_error(
            423, "halted",
            "reading stored; this node is halted, so it stays awake for reflashing ('tswarm resume' ends it)",
            stored=True, time=rfc3339(ts),
        )
    return web.json_response({"stored": True, "node": name, "time": rfc3339(ts)}, status=202)


def setup_routes(app: web.Application) -> None:
    for path in ("/api/nodes/{name}", "/api/nodes/{name}/"):
        app.router.add_route("PUT", path, node_reading)
        app.router.add_route("POST", path, node_reading)
