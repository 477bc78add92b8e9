"""Admin over HTTP: what the CLI does, behind ``Authorization: Bearer <TSWARM_ADMIN_TOKEN>``.

Without a configured admin token every route here answers 404 ``admin_disabled``. The handlers
call the same :class:`~tswarm.journal.Journal` functions as ``tswarm node ...``, ``halt`` and
``resume``. Routes (all JSON):

| route | does |
|---|---|
| ``POST /api/admin/nodes`` ``{"name", "password"?}`` | register a node, 201 with its svconf |
| ``POST /api/admin/nodes/{name}/password`` ``{"password"?}`` | new password, 200 with the new svconf |
| ``DELETE /api/admin/nodes/{name}`` | revoke a node (its readings stay) |
| ``PUT /api/admin/nodes/{name}/interval`` ``{"interval_s"}`` | expected seconds between readings |
| ``POST /api/admin/nodes/{name}/halt`` / ``.../resume`` | halt or resume one node |
| ``POST /api/admin/halt`` / ``/api/admin/resume`` | halt or resume every node |
"""
from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from . import auth, keys
from .access import admins_only
from .errors import json_error
from .health import check_interval
from .journal import NodeExists, NodeNotFound
from .protocol import NODE_NAME_HELP, valid_node_name
from .svconf import svconf

log = logging.getLogger("tswarm.admin")


class BadBody(ValueError):
    pass


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise BadBody("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    return body


async def _password_and_hash(request: web.Request, body: dict) -> tuple[str, str]:
    password = body.get("password")
    if password is None:
        password = auth.generate_password()
    elif not isinstance(password, str) or not password:
        raise BadBody("password must be a non-empty string (or left out: a strong one is generated)")
    n = request.app[keys.CONFIG].scrypt_n
    loop = asyncio.get_running_loop()
    password_hash = await loop.run_in_executor(request.app[keys.HASHER], lambda: auth.hash_password(password, n=n))
    return password, password_hash


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not valid_node_name(name):
        raise BadBody(f"node names are {NODE_NAME_HELP}")
    return name


def _no_such_node(name: str) -> web.Response:
    return json_error(404, "unknown_node", f"no node named {name!r}; GET /api/nodes lists them")


def _handles_bad_bodies(handler):
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadBody as exc:
            return json_error(400, "bad_request", str(exc))
        except NodeNotFound as exc:
            return _no_such_node(exc.args[0])

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return admins_only(wrapped)


@_handles_bad_bodies
async def add_node(request: web.Request) -> web.Response:
    body = await _json_body(request)
    name = body.get("name")
    if not isinstance(name, str) or not valid_node_name(name):
        raise BadBody(f"'name' is required; node names are {NODE_NAME_HELP}")
    password, password_hash = await _password_and_hash(request, body)
    try:
        request.app[keys.JOURNAL].add_node(name, password_hash)
    except NodeExists:
        return json_error(409, "node_exists", f"node {name!r} exists; POST /api/admin/nodes/{name}/password gives it a new password")
    log.info("admin API: added node %s", name)
    return web.json_response(svconf(request.app[keys.CONFIG], name, password), status=201)


@_handles_bad_bodies
async def set_password(request: web.Request) -> web.Response:
    name = _name(request)
    password, password_hash = await _password_and_hash(request, await _json_body(request))
    request.app[keys.JOURNAL].set_password(name, password_hash)
    request.app[keys.CREDENTIALS].forget(name)
    log.info("admin API: new password for node %s", name)
    return web.json_response(svconf(request.app[keys.CONFIG], name, password))


@_handles_bad_bodies
async def remove_node(request: web.Request) -> web.Response:
    name = _name(request)
    request.app[keys.JOURNAL].remove_node(name)
    request.app[keys.CREDENTIALS].forget(name)
    log.info("admin API: removed node %s", name)
    return web.json_response({"removed": name})


@_handles_bad_bodies
async def set_interval(request: web.Request) -> web.Response:
    name = _name(request)
    seconds = (await _json_body(request)).get("interval_s")
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise BadBody("'interval_s' is required: whole seconds between the node's readings")
    try:
        check_interval(seconds)
    except ValueError as exc:
        raise BadBody(str(exc)) from None
    request.app[keys.JOURNAL].set_interval(name, seconds)
    return web.json_response({"node": name, "interval_s": seconds})


def _halt_route(halted: bool, one_node: bool):
    @_handles_bad_bodies
    async def handler(request: web.Request) -> web.Response:
        name = _name(request) if one_node else None
        request.app[keys.JOURNAL].set_halt(name, halted)
        log.info("admin API: %s %s", "halted" if halted else "resumed", name or "all nodes")
        return web.json_response({"node": name, "halted": halted})

    return handler


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/admin/nodes", add_node)
    r.add_post("/api/admin/nodes/{name}/password", set_password)
    r.add_delete("/api/admin/nodes/{name}", remove_node)
    r.add_put("/api/admin/nodes/{name}/interval", set_interval)
    r.add_post("/api/admin/nodes/{name}/halt", _halt_route(True, one_node=True))
    r.add_post("/api/admin/nodes/{name}/resume", _halt_route(False, one_node=True))
    r.add_post("/api/admin/halt", _halt_route(True, one_node=False))
    r.add_post("/api/admin/resume", _halt_route(False, one_node=False))
