"""The node protocol (frozen: firmware in the field depends on it).

``PUT``/``POST /api/nodes/{name}`` with Basic auth and ``{"name", "data"}``. The handler refuses
early, in order: size, name, firmware headers, login (service/auth.py's
:func:`~tswarm.auth.authenticate`: address guard, credentials), node state, JSON, values; only a
valid reading reaches the journal, and the 202 (or 423 while halted) comes after its commit.

Over-the-air updates ride on what old firmware ignores (docs/protocol.md): a board that sends
``X-Tswarm-Firmware`` (and ``X-Tswarm-Rolled-Back`` after a rollback) has what it runs recorded
after the commit, and its 202/423 may carry an ``"update"`` (service/bundles.py decides); every
202/423 carries ``"sleep"`` (and a 423 ``"awake"``). A board that sends neither header sees the
same status codes and the same keys as before, plus those two. The files of an update are served
by service/firmware_routes.py.

Newer firmware also sends telemetry, a kept reading's ``age`` and a key (``boot``, ``seq``) in the
body (service/payload.py). A reading sent again under a key its node has stored (its 202 was lost on
the way back) is not stored again: it gets the first time's 202/423, with the stored reading's
``time``, plus ``"duplicate": true``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Optional

from aiohttp import web

from . import bundles, keys
from .auth import LoginRefused, authenticate
from .bodies import read_body
from .errors import json_error
from .names import NODE_NAME_HELP, valid_node_name
from .nodes import is_halted
from .storage import Duplicate, NodeAuth, StorageError, StorageUnavailable
from .payload import PayloadError, parse_body
from .timefmt import rfc3339

log = logging.getLogger("tswarm.protocol")

RETRY_AFTER_UNAVAILABLE = "30"
FIRMWARE_HEADER = "X-Tswarm-Firmware"  # the bundle version the board runs (new firmware only)
ROLLED_BACK_HEADER = "X-Tswarm-Rolled-Back"  # the version it gave up, until a 202/423 after the rollback


class BadFirmwareHeader(ValueError):
    """A firmware header that is not a version: the 400's detail."""


def firmware_headers(headers) -> tuple[Optional[str], Optional[str]]:
    """``(reported, rolled_back_from)`` from a request's headers (None: not sent), or
    :class:`BadFirmwareHeader`: each at most once, each a version (``bundles.VERSION``), and
    ``X-Tswarm-Rolled-Back`` only beside ``X-Tswarm-Firmware``."""
    values = []
    for header in (FIRMWARE_HEADER, ROLLED_BACK_HEADER):
        given = headers.getall(header, [])
        if len(given) > 1:
            raise BadFirmwareHeader(f"{header} is sent once, not {len(given)} times")
        value = given[0].strip() if given else None
        if value is not None and not bundles.VERSION.match(value):
            raise BadFirmwareHeader(f"{header} must be a firmware version: 1 to 64 of A-Z a-z 0-9 . _ -")
        values.append(value)
    if values[1] is not None and values[0] is None:
        raise BadFirmwareHeader(f"{ROLLED_BACK_HEADER} comes with {FIRMWARE_HEADER} (the version running now)")
    return values[0], values[1]


READING_UNAVAILABLE = "the reading could not be stored and was not accepted; retry later"


def unavailable(name: str, exc: StorageUnavailable, detail: str = READING_UNAVAILABLE) -> web.Response:
    """503: nothing acknowledged; the node tries again on its next wake. The outage is logged once,
    by the writer (service/storage/group.py), not once a reading."""
    log.debug("journal refused a request of %s: %s", name, exc)
    return json_error(503, "journal_unavailable", detail, headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})


async def node_login(request: web.Request, name: str, detail: str = READING_UNAVAILABLE) -> NodeAuth | web.Response:
    """The node of a request to ``/api/nodes/{name}...`` by its Basic credentials
    (:func:`~tswarm.auth.authenticate`), or the answer that refuses it: 401/403/429, or 503 while
    the storage is away, saying ``detail`` (at once when it is known to be away: no lookup waits for
    a connection)."""
    app = request.app
    writer = app[keys.WRITER]
    away = await writer.away()
    if away is not None:
        writer.unavailable(away)
        return unavailable(name, away, detail)
    try:
        return await authenticate(
            request.headers.get("Authorization"), request.remote or "unknown", name,
            # on the event loop from the registry snapshot while the record is unchanged, else in a read
            # thread (service/pool.py); the pool refuses at once while an outage is known, and tells the writer
            lookup=app[keys.STORAGE].node_auth,
            cache=app[keys.CREDENTIALS], guard=app[keys.GUARD], hasher=app[keys.HASHER],
        )
    except LoginRefused as refused:
        return json_error(refused.status, refused.error, refused.detail, headers=refused.headers)
    except StorageUnavailable as exc:  # the node's lookup: the database is away (PostgreSQL restarting)
        return unavailable(name, exc, detail)


async def _firmware_answer(
    app: web.Application, node: NodeAuth, reported: Optional[str], rolled_back: Optional[str], now_ns: int,
) -> dict:
    """After the reading committed: record what a board that said which firmware it runs reported
    (only when it differs from what is stored: a steady node costs no write), and the ``"update"``
    to offer it, as ``{"update": {...}}`` or ``{}``. A failed write or read costs the board only its
    offer, this once: the reading is acknowledged all the same."""
    if reported is None:
        return {}
    storage = app[keys.STORAGE]
    try:
        if reported != node.fw_running or (rolled_back is not None and rolled_back != node.fw_rolled_back):
            await storage.write(lambda s: s.report_firmware(node.name, reported, rolled_back, now_ns))
        version = bundles.offered(node, reported, rolled_back)
        files = await storage.read(lambda s: s.bundle_files(version)) if version is not None else None
    except StorageUnavailable as exc:  # the pool told the writer, which logs an outage once
        log.debug("firmware of %s not recorded, no update offered: %s", node.name, exc)
        return {}
    except StorageError as exc:
        log.warning("firmware of %s not recorded, no update offered: %s", node.name, exc)
        return {}
    if not files:  # staged but not kept: nothing a board could fetch
        return {}
    return {"update": {"version": version, "files": [
        {"name": f.name, "size": f.size, "sha256": f.sha256} for f in files
    ]}}


async def _read_again(app: web.Application, node: NodeAuth) -> NodeAuth:
    """``node`` read again past any cache of the engine's, before an answer that must not rest on a
    change not yet announced here (another instance's first POST, before a 405; its resume, before a
    423). The fresh record is used only while its password hash is the one the request verified
    against. :class:`StorageUnavailable` as the read raises it."""
    fresh = await app[keys.STORAGE].node_auth(node.name, fresh=True)
    return fresh if fresh is not None and fresh.password_hash == node.password_hash else node


async def node_reading(request: web.Request) -> web.Response:
    app = request.app
    config = app[keys.CONFIG]
    name = request.match_info["name"]

    body = await read_body(request, config.max_body)  # decoded; None: larger than the limit
    if body is None:
        return json_error(
            413, "too_large", f"body larger than {config.max_body} bytes; a reading is a few dozen",
            headers={"Connection": "close"},
        )
    if not valid_node_name(name):
        return json_error(400, "bad_node_name", f"node names are {NODE_NAME_HELP}")

    try:
        reported, rolled_back = firmware_headers(request.headers)
    except BadFirmwareHeader as exc:
        return json_error(400, "bad_firmware_version", str(exc))

    node = await node_login(request, name)
    if isinstance(node, web.Response):
        return node
    writer = app[keys.WRITER]

    create = request.method == "POST"
    if not node.created and not create:
        try:
            node = await _read_again(app, node)  # a 405 never rests on a record another instance changed
        except StorageUnavailable as exc:
            return unavailable(name, exc)
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
        ts = await writer.append(
            node.id, reading.temperature, reading.humidity, create=create,
            extra=reading.extra, age_s=reading.age_s, key=reading.key,
        )
    except StorageUnavailable as exc:
        return unavailable(name, exc)
    again = {}
    if isinstance(ts, Duplicate):
        app[keys.STATS].duplicates += 1
        again = {"duplicate": True}
    else:
        app[keys.STATS].accepted += 1
    # the firmware report is of now: a kept reading's or a repeat's time is older
    now_ns = ts if reading.age_s == 0 and not again else time.time_ns()
    update = await _firmware_answer(app, node, reported, rolled_back, now_ns)

    if is_halted(node, config):  # a 423 keeps a board awake: never on a resume not yet heard of
        with contextlib.suppress(StorageUnavailable):  # the reading is stored: away now, the cached answer
            node = await _read_again(app, node)
    if is_halted(node, config):
        return _answer(423, {
            "error": "halted", "detail": HALTED_DETAIL,
            "stored": True, "time": rfc3339(ts), "sleep": node.interval_s, "awake": config.halt_awake, **update, **again,
        })
    if not update and not again and type(node.interval_s) is int:
        return _json(202, stored_body(name, ts, node.interval_s))
    return _answer(202, {"stored": True, "node": name, "time": rfc3339(ts), "sleep": node.interval_s, **update, **again})


def stored_body(name: str, ts: int, sleep: int) -> bytes:
    """The body of a plain 202 (no update, no repeat), the bytes :func:`_answer`'s ``json.dumps`` gives
    for ``{"stored": true, "node": name, "time": rfc3339(ts), "sleep": sleep}``, from one format: a
    node's name (service/names.py) and a time need no JSON escapes, and an ``int`` (not a ``bool``)
    is written as ``json.dumps`` writes it. Property-tested against ``json.dumps``."""
    return f'{{"stored": true, "node": "{name}", "time": "{rfc3339(ts)}", "sleep": {sleep}}}'.encode()


HALTED_DETAIL = "reading stored; this node is halted, so it stays awake for reflashing ('tswarm resume' ends it)"


def _answer(status: int, doc: dict) -> web.Response:
    """The 202/423 of a stored reading: the bytes and headers ``web.json_response(doc)`` (and
    :func:`~tswarm.errors.json_error` for the 423) would give, from one ``json.dumps`` and no more."""
    return _json(status, json.dumps(doc).encode())


def _json(status: int, body: bytes) -> web.Response:
    """An answer of JSON ``body``, with the Content-Type ``web.json_response`` gives."""
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


def setup_routes(app: web.Application) -> None:
    for path in ("/api/nodes/{name}", "/api/nodes/{name}/"):
        app.router.add_route("PUT", path, node_reading)
        app.router.add_route("POST", path, node_reading)
