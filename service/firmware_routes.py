"""The files of an over-the-air update: ``GET /api/nodes/{name}/firmware/{version}/{file}`` (HEAD too).

A board that was offered an update (a 202/423 with ``"update"``, service/protocol.py) fetches each
file of it here with its own Basic credentials, logged in exactly as a reading is (address guard,
401/403/429, 503 while the storage is away). A node reads only the version staged for itself:

| answer | when |
|---|---|
| 200 ``application/octet-stream``, ``Content-Length``, ``ETag: "<sha256>"`` | the file |
| 404 ``not_staged`` | ``{version}`` is not the version staged for this node (now) |
| 404 ``no_such_file`` | the bundle has no such file |
"""
from __future__ import annotations

import hashlib

from aiohttp import web

from . import bundles, keys
from .errors import json_error
from .names import NODE_NAME_HELP, valid_node_name
from .protocol import node_login, unavailable
from .storage import StorageUnavailable
from .timefmt import shown

UNAVAILABLE = "the update cannot be read now; retry later (the board keeps the bundle it runs)"


async def firmware_file(request: web.Request) -> web.Response:
    name, version, file = (request.match_info[k] for k in ("name", "version", "file"))
    if not valid_node_name(name):
        return json_error(400, "bad_node_name", f"node names are {NODE_NAME_HELP}")
    node = await node_login(request, name, UNAVAILABLE)
    if isinstance(node, web.Response):
        return node
    if node.fw_staged is None or version != node.fw_staged:
        return json_error(404, "not_staged", f"no update {shown(version)} is staged for node {name}; "
                          "fetch the version the last 202/423 offered ('tswarm firmware status' shows it)")
    try:
        content = (await request.app[keys.STORAGE].read(lambda s: s.bundle_file(version, file))
                   if bundles.FILE_NAME.match(file) else None)
    except StorageUnavailable as exc:
        return unavailable(name, exc, UNAVAILABLE)
    if content is None:
        return json_error(404, "no_such_file", f"update {version} has no file {shown(file)}; the offer lists its files")
    return web.Response(body=content, content_type="application/octet-stream",
                        headers={"ETag": f'"{hashlib.sha256(content).hexdigest()}"'})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/nodes/{name}/firmware/{version}/{file}", firmware_file)  # and HEAD
