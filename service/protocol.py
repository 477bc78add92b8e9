"""The node protocol (frozen: firmware in the field depends on it).

``PUT``/``POST /api/nodes/{name}`` with Basic auth and ``{"name", "data"}``. The handler refuses
early, in order: size, name, login (service/auth.py's :func:`~tswarm.auth.authenticate`: address
guard, credentials), node state, JSON, values; only a valid reading reaches the journal, and the
202 (or 423 while halted) comes after its commit.
"""
from __future__ import annotations

import logging
from typing import Optional

from aiohttp import web

from . import keys
from .auth import LoginRefused, authenticate
from .errors import json_error
from .names import NODE_NAME_HELP, valid_node_name
from .nodes import is_halted
from .storage import StorageUnavailable
from .payload import PayloadError, parse_body
from .timefmt import rfc3339

log = logging.getLogger("tswarm.protocol")

RETRY_AFTER_UNAVAILABLE = "30"


async def _read_body(request: web.Request, limit: int) -> Optional[bytes]:
    """The whole body, or None when it is larger than ``limit`` (declared or actual)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _unavailable(name: str, exc: StorageUnavailable) -> web.Response:
    """503: nothing acknowledged; the node tries again on its next wake. The outage is logged once,
    by the writer (service/storage/group.py), not once a reading."""
    log.debug("journal refused a reading from %s: %s", name, exc)
    return json_error(
        503, "journal_unavailable", "the reading could not be stored and was not accepted; retry later",
        headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
    )


async def node_reading(request: web.Request) -> web.Response:
    app = request.app
    config = app[keys.CONFIG]
    name = request.match_info["name"]

    body = await _read_body(request, config.max_body)
    if body is None:
        return json_error(
            413, "too_large", f"body larger than {config.max_body} bytes; a reading is a few dozen",
            headers={"Connection": "close"},
        )
    if not valid_node_name(name):
        return json_error(400, "bad_node_name", f"node names are {NODE_NAME_HELP}")

    writer = app[keys.WRITER]
    away = await writer.away()
    if away is not None:  # the database is known to be away: no lookup waits for a connection
        writer.unavailable(away)
        return _unavailable(name, away)
    try:
        node = await authenticate(
            request.headers.get("Authorization"), request.remote or "unknown", name,
            # the storage pool refuses at once while an outage is known, and tells the writer of one
            lookup=lambda login: app[keys.STORAGE].read(lambda storage: storage.node_auth(login)),
            cache=app[keys.CREDENTIALS], guard=app[keys.GUARD], hasher=app[keys.HASHER],
        )
    except LoginRefused as refused:
        return json_error(refused.status, refused.error, refused.detail, headers=refused.headers)
    except StorageUnavailable as exc:  # the node's lookup: the database is away (PostgreSQL restarting)
        return _unavailable(name, exc)

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
        ts = await writer.append(node.id, reading.temperature, reading.humidity, create=create)
    except StorageUnavailable as exc:
        return _unavailable(name, exc)
    app[keys.STATS].accepted += 1

    if is_halted(node, config):
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
