"""Admin over HTTP: what the CLI does, behind ``Authorization: Bearer <TSWARM_ADMIN_TOKEN>``.

Without a configured admin token every route here answers 404 ``admin_disabled``. The handlers
call the same functions as ``tswarm node ...``, ``halt`` and ``resume`` (registering a node is
:func:`tswarm.nodes.register`), in the app's storage write thread: a write that waits for another
process's lock never holds up the event loop. Routes (all JSON):

| route | does |
|---|---|
| ``POST /api/admin/nodes`` ``{"name", "password"?, "display"?}`` | register a node, 201 with its svconf |
| ``POST /api/admin/nodes/{name}/password`` ``{"password"?}`` | new password, 200 with the new svconf |
| ``DELETE /api/admin/nodes/{name}`` | revoke a node (its readings stay) |
| ``PUT /api/admin/nodes/{name}/interval`` ``{"interval_s"}`` | expected seconds between readings |
| ``PUT /api/admin/nodes/{name}/display`` ``{"display"}`` | the display right (``tswarm node display``) |
| ``POST /api/admin/nodes/{name}/halt`` / ``.../resume`` | halt or resume one node |
| ``POST /api/admin/halt`` / ``/api/admin/resume`` | halt or resume every node |
| ``POST /api/admin/firmware`` ``{"files": [{"name", "content_b64"}], "nodes": [...]}`` (or ``"all": true``) | stage a bundle (``tswarm firmware push``) |
| ``POST /api/admin/nodes/{name}/config`` ``{"patch": {...}}`` | stage a config change (``tswarm node config --push``) |
| ``DELETE /api/admin/nodes/{name}/firmware`` | unstage what is staged for a node |
| ``GET /api/admin/firmware`` | every node's firmware (``tswarm firmware status --json``) |
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from typing import Optional

from aiohttp import web

from . import bundles, keys
from .access import admins_only
from .bodies import read_body
from .errors import json_error
from .health import MAX_INTERVAL_S, MIN_INTERVAL_S, check_interval
from .names import NODE_NAME_HELP, valid_node_name
from .nodes import (BadPassword, NoNodes, Registered, Registration, firmware_report, register, stage_config,
                    stage_update)
from .storage import NodeExists, NodeNotFound
from .svconf import svconf
from .timefmt import shown

log = logging.getLogger("tswarm.admin")


class BadBody(ValueError):
    pass


@dataclass(frozen=True)
class Field:
    """One field of a route's JSON body: its name, its JSON type and what it holds (for errors)."""

    name: str
    kind: type  # str, int, bool, list or dict (a bool is never an int here: JSON's true is not a number)
    help: str
    required: bool = True


NAME = Field("name", str, f"a node name: {NODE_NAME_HELP}")
PASSWORD = Field("password", str, "a non-empty string; leave it out and a strong one is generated", required=False)
DISPLAY_HELP = "true: it may read the swarm's summary (GET /api/nodes/{name}/swarm: a master node); false: not"
NEW_DISPLAY = Field("display", bool, DISPLAY_HELP + " (the default)", required=False)
DISPLAY = Field("display", bool, DISPLAY_HELP)
INTERVAL = Field("interval_s", int, f"whole seconds between the node's readings, {MIN_INTERVAL_S} to {MAX_INTERVAL_S}")
FILES = Field("files", list, 'the bundle\'s files, each {"name": "node.py", "content_b64": "<base64>"}')
NODES = Field("nodes", list, "the names of the nodes to update; or leave it out and give \"all\": true", required=False)
ALL = Field("all", bool, "true: every registered node (instead of \"nodes\")", required=False)
PATCH = Field("patch", dict, "the keys of config.json to change, e.g. {\"netconf\": {\"sleep\": 600}}")

_KINDS = {str: "a string", int: "an integer", bool: "true or false", list: "an array", dict: "an object"}
# A bundle's files in base64 and JSON: bigger than a reading's TSWARM_MAX_BODY.
FIRMWARE_MAX_BODY = bundles.MAX_BUNDLE_BYTES * 4 // 3 + 64 * 1024


def _json_type(value) -> str:
    """What a value parsed from JSON is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


class TooLarge(ValueError):
    pass


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, decoded (service/bodies.py), up to ``limit`` bytes; :class:`TooLarge` beyond it."""
    data = await read_body(request, limit)
    if data is None:
        raise TooLarge(f"the body is larger than {limit} bytes (decoded), more than this route takes")
    return data


def _no_duplicate_keys(pairs: list) -> dict:
    """A JSON object, refused when it names a key twice: which one counts is every parser's own guess."""
    body = dict(pairs)
    if len(body) < len(pairs):
        seen = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise BadBody(f"the body gives {shown(twice)} more than once; give each field once")
    return body


async def _json_body(request: web.Request, limit: Optional[int] = None) -> dict:
    """The body as a JSON object; no body (or white space alone) is ``{}``."""
    if not request.can_read_body:
        data = b""
    else:
        data = await _read_at_most(request, request.app[keys.CONFIG].max_body if limit is None else limit)
    if not data.strip():
        return {}
    try:
        body = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except BadBody:  # _no_duplicate_keys
        raise
    except UnicodeDecodeError:
        raise BadBody("the body is not JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise BadBody("the body is not JSON: it is nested too deeply") from None
    except ValueError as exc:
        raise BadBody(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadBody(f"the body must be a JSON object, not {_json_type(body)}")
    return body


async def _fields(request: web.Request, *fields: Field, limit: Optional[int] = None) -> dict:
    """The route's fields from its JSON body, each of its type; BadBody for an unknown field, a
    missing one or one of the wrong type. A route without fields takes no body, or ``{}``."""
    body = await _json_body(request, limit)
    names = [field.name for field in fields]
    for key in body:
        if key not in names:
            takes = ", ".join(names) or "no body"
            raise BadBody(f"unknown field {shown(key)}; this route takes {takes}")
    values = {}
    for field in fields:
        if field.name not in body:
            if field.required:
                raise BadBody(f"{field.name} is required ({field.help})")
            continue
        value = body[field.name]
        if type(value) is not field.kind:
            raise BadBody(f"{field.name} must be {_KINDS[field.kind]} ({field.help}), not {_json_type(value)}")
        values[field.name] = value
    return values


async def _register(
    request: web.Request, name: str, password: Optional[str], which: Registration, display: Optional[bool] = None,
) -> Registered:
    """:func:`tswarm.nodes.register` in the storage write thread (scrypt included); then this
    process's credential cache forgets the node (other processes need not: see service/nodes.py)."""
    app = request.app
    try:
        registered = await app[keys.STORAGE].write(register, app[keys.CONFIG], name, password, which, display=display)
    except BadPassword as exc:
        raise BadBody(f"password {exc} ({PASSWORD.help})") from None
    app[keys.CREDENTIALS].forget(name)
    return registered


def _write(request: web.Request, fn):
    """A storage write (``fn(storage)``) in the storage write thread."""
    return request.app[keys.STORAGE].write(fn)


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
        except TooLarge as exc:  # the rest of the body is not read: the connection closes, as the node protocol's 413
            return json_error(413, "too_large", str(exc), headers={"Connection": "close"})
        except NodeNotFound as exc:
            return _no_such_node(exc.args[0])

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return admins_only(wrapped)


@_handles_bad_bodies
async def add_node(request: web.Request) -> web.Response:
    body = await _fields(request, NAME, PASSWORD, NEW_DISPLAY)
    name = body["name"]
    if not valid_node_name(name):
        raise BadBody(f"name {shown(name)} is not {NAME.help}")
    try:
        registered = await _register(request, name, body.get("password"), Registration.NEW, body.get("display") or None)
    except NodeExists:
        return json_error(409, "node_exists", f"node {name!r} exists; POST /api/admin/nodes/{name}/password gives it a new password")
    log.info("admin API: added node %s", name)
    return web.json_response(svconf(request.app[keys.CONFIG], name, registered.password), status=201)


@_handles_bad_bodies
async def set_password(request: web.Request) -> web.Response:
    name = _name(request)
    body = await _fields(request, PASSWORD)
    registered = await _register(request, name, body.get("password"), Registration.EXISTING)
    log.info("admin API: new password for node %s", name)
    return web.json_response(svconf(request.app[keys.CONFIG], name, registered.password))


@_handles_bad_bodies
async def remove_node(request: web.Request) -> web.Response:
    name = _name(request)
    await _fields(request)
    await _write(request, lambda storage: storage.remove_node(name))
    request.app[keys.CREDENTIALS].forget(name)
    log.info("admin API: removed node %s", name)
    return web.json_response({"removed": name})


@_handles_bad_bodies
async def set_interval(request: web.Request) -> web.Response:
    name = _name(request)
    seconds = (await _fields(request, INTERVAL))["interval_s"]
    try:
        check_interval(seconds)
    except ValueError as exc:
        raise BadBody(str(exc)) from None
    await _write(request, lambda storage: storage.set_interval(name, seconds))
    return web.json_response({"node": name, "interval_s": seconds})


@_handles_bad_bodies
async def set_display(request: web.Request) -> web.Response:
    name = _name(request)
    on = (await _fields(request, DISPLAY))["display"]
    await _write(request, lambda storage: storage.set_display(name, on))
    log.info("admin API: node %s %s read the swarm", name, "may" if on else "may no longer")
    return web.json_response({"node": name, "display": on})


def _halt_route(halted: bool, one_node: bool):
    @_handles_bad_bodies
    async def handler(request: web.Request) -> web.Response:
        name = _name(request) if one_node else None
        await _fields(request)
        await _write(request, lambda storage: storage.set_halt(name, halted))
        log.info("admin API: %s %s", "halted" if halted else "resumed", name or "all nodes")
        return web.json_response({"node": name, "halted": halted})

    return handler


# -- over-the-air updates (service/nodes.py's stage_update, as the CLI) ----------------------------


def _bundle_files(items: list) -> list[tuple[str, bytes]]:
    files = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"name", "content_b64"}:
            raise BadBody(f"files[{i}] must be an object with exactly name and content_b64 ({FILES.help})")
        name, content = item["name"], item["content_b64"]
        if not isinstance(name, str) or not isinstance(content, str):
            raise BadBody(f"files[{i}]: name and content_b64 must be strings ({FILES.help})")
        try:
            files.append((name, base64.b64decode(content, validate=True)))
        except (binascii.Error, ValueError):
            raise BadBody(f"files[{i}] ({shown(name)}): content_b64 is not base64") from None
    return files


def _node_list(names: list) -> list[str]:
    if not names:
        raise BadBody(f"nodes is empty ({NODES.help})")
    for name in names:
        if not isinstance(name, str) or not valid_node_name(name):
            raise BadBody(f"nodes: {shown(name) if isinstance(name, str) else _json_type(name)} is not {NAME.help}")
    return names


async def _stage(request: web.Request, files, names: Optional[list[str]]):
    try:
        return await _write(request, lambda storage: stage_update(storage, files, names, time.time_ns()))
    except bundles.BundleError as exc:
        raise BadBody(str(exc)) from None


@_handles_bad_bodies
async def push_firmware(request: web.Request) -> web.Response:
    body = await _fields(request, FILES, NODES, ALL, limit=FIRMWARE_MAX_BODY)
    every = body.get("all", False)
    if ("nodes" in body) == every:
        raise BadBody('give "nodes": [names] or "all": true, not both')
    names = None if every else _node_list(body["nodes"])
    try:
        staged = await _stage(request, _bundle_files(body["files"]), names)
    except NoNodes as exc:
        return json_error(404, "no_nodes", str(exc))
    log.info("admin API: staged firmware %s for %s", staged.version, ", ".join(staged.nodes))
    return web.json_response({"version": staged.version, "files": [
        {"name": f.name, "size": f.size, "sha256": f.sha256} for f in staged.files
    ], "staged": staged.nodes, "replaced": staged.replaced})


@_handles_bad_bodies
async def push_config(request: web.Request) -> web.Response:
    name = _name(request)
    patch = (await _fields(request, PATCH))["patch"]
    try:  # checked as `tswarm node config --push` is (service/bundles.py's check_patch); a netconf.sleep
        # is also the node's interval, as with the CLI (what every 202/423 tells the board to sleep)
        staged = await _write(request, lambda storage: stage_config(storage, name, patch, time.time_ns()))
    except bundles.BundleError as exc:
        raise BadBody(f"patch: {exc}") from None
    log.info("admin API: staged config change %s for %s", staged.version, name)
    return web.json_response({"version": staged.version, "staged": staged.nodes, "replaced": staged.replaced})


@_handles_bad_bodies
async def unstage(request: web.Request) -> web.Response:
    name = _name(request)
    await _fields(request)
    await _write(request, lambda storage: storage.stage_bundle(None, [name], time.time_ns()))
    log.info("admin API: unstaged the update of %s", name)
    return web.json_response({"node": name, "staged": None})


@_handles_bad_bodies
async def get_firmware(request: web.Request) -> web.Response:
    return web.json_response(await request.app[keys.STORAGE].read(firmware_report))


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/admin/nodes", add_node)
    r.add_post("/api/admin/nodes/{name}/password", set_password)
    r.add_delete("/api/admin/nodes/{name}", remove_node)
    r.add_put("/api/admin/nodes/{name}/interval", set_interval)
    r.add_put("/api/admin/nodes/{name}/display", set_display)
    r.add_post("/api/admin/nodes/{name}/halt", _halt_route(True, one_node=True))
    r.add_post("/api/admin/nodes/{name}/resume", _halt_route(False, one_node=True))
    r.add_post("/api/admin/halt", _halt_route(True, one_node=False))
    r.add_post("/api/admin/resume", _halt_route(False, one_node=False))
    r.add_post("/api/admin/firmware", push_firmware)
    r.add_get("/api/admin/firmware", get_firmware)
    r.add_post("/api/admin/nodes/{name}/config", push_config)
    r.add_delete("/api/admin/nodes/{name}/firmware", unstage)
