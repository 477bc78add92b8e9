"""The swarm's summary for a master node's screen: ``GET /api/nodes/{name}/swarm``.

A master node (a board with an SSD1306 screen, firmware/master.py) shows every node's latest
temperature, humidity and health. It reads them here with its own Basic credentials, logged in
exactly as a reading is (:func:`~tswarm.protocol.node_login`: address guard, 401/403/429, 503 while
the storage is away), once the node has the display right (``tswarm node display NAME on``, ``tswarm
node add NAME --display``, the admin API). Node credentials read nothing else: without the right
this is a 403 too.

| answer | when |
|---|---|
| 200 ``application/json`` (compact), ``Cache-Control: no-store`` | the page of the summary |
| 400 ``bad_parameter`` | a query parameter other than ``offset``/``limit``, or a bad value |
| 403 ``no_display_right`` | the node's credentials, but it may not read the swarm |

Every master polls it every interval, so it costs one storage read (:meth:`Storage.swarm_nodes`:
the nodes with their newest reading and halt-all, one statement) and no count of readings; the
answer is a page of at most :data:`MAX_LIMIT` nodes, a few hundred bytes per ten nodes, sized for a
board's memory. No password hash, no firmware detail, nothing of another node but what its screen
line shows. No aiohttp in :func:`swarm_summary` (the route below calls it).
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Mapping, Optional

from aiohttp import web

from . import keys
from .errors import json_error
from .health import HEALTH_STATES, health
from .names import NODE_NAME_HELP, valid_node_name
from .nodes import battery_low, is_halted
from .protocol import node_login, unavailable
from .settings import Config
from .storage import NodeStatus, StorageUnavailable
from .timefmt import shown

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_DIGITS = 12  # of a parameter's value, leading zeros aside (int() of a long string costs)
PARAMS = ("offset", "limit")
UNAVAILABLE = "the swarm's summary cannot be read now; retry later (the screen keeps what it shows)"


class BadParameter(ValueError):
    """A query the summary cannot answer: the message says what is allowed."""


def _whole(query: Mapping[str, str], name: str, default: int, low: int, high: Optional[int]) -> int:
    value = query.get(name)
    allowed = f"a whole number from {low}" + (f" to {high}" if high is not None else " on")
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()):
        raise BadParameter(f"{name} must be {allowed}, not {shown(value)}")
    if len(value.lstrip("0")) > MAX_DIGITS:  # a whole number all the same: say the bound it passed
        bound = "" if high is not None else f" of at most {MAX_DIGITS} digits"
        raise BadParameter(f"{name} must be {allowed}{bound}, not {shown(value)}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise BadParameter(f"{name} must be {allowed}, not {number}")
    return number


def parse_query(query) -> tuple[int, int]:
    """``(offset, limit)`` from the query string (a multidict): ``offset`` >= 0 (default 0), ``limit``
    1 to :data:`MAX_LIMIT` (default :data:`DEFAULT_LIMIT`), each at most once; BadParameter otherwise."""
    unknown = sorted(set(query) - set(PARAMS))
    if unknown:
        raise BadParameter(f"unknown parameter {shown(unknown[0])}; known: offset, limit")
    for name in PARAMS:
        if len(query.getall(name, ())) > 1:
            raise BadParameter(f"give {name} once")
    return _whole(query, "offset", 0, 0, None), _whole(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def _node_line(node: NodeStatus, state: str, now_ns: int, battery_low_v: float) -> dict:
    return {
        "name": node.name,
        "health": state,
        "age": None if node.last_ts is None else max(0, (now_ns - node.last_ts) // 1_000_000_000),
        "temperature": node.last_temperature,
        "humidity": node.last_humidity,
        "vbat": node.last_vbat,
        "low": battery_low(node.last_vbat, battery_low_v),
    }


def swarm_summary(
    nodes: Iterable[NodeStatus], *, halted_all: bool, config: Config, sleep: int, offset: int, limit: int, now_ns: int,
    requester: Optional[str] = None,
) -> dict:
    """The summary: ``total`` registered nodes, ``counts`` of each health (and of low batteries) over
    all of them, ``sleep`` (the requesting node's interval: how often its screen refreshes) and the page
    ``[offset, offset + limit)`` of the nodes by name (as :meth:`Storage.list_nodes` gives them).

    The ``requester`` is left out while it has never sent a reading: a master without a sensor of its
    own would otherwise be a ``never`` on its own screen and in its count of nodes needing attention,
    for ever. A master with a sensor is listed like any node from its first reading on."""
    halted_all = is_halted(None, config, halted_all)
    lines = [_node_line(n, health(now_ns, n.last_ts, n.interval_s, is_halted(n, config, halted_all)), now_ns,
                        config.battery_low_v) for n in nodes if n.name != requester or n.last_ts is not None]
    counts = dict.fromkeys(HEALTH_STATES, 0)
    for line in lines:
        counts[line["health"]] += 1
    counts["low_battery"] = sum(1 for line in lines if line["low"])
    return {"total": len(lines), "offset": offset, "sleep": sleep, "counts": counts,
            "nodes": lines[offset:offset + limit]}


async def get_swarm(request: web.Request) -> web.Response:
    """The swarm's summary for node ``{name}`` with the display right (see the module's docstring)."""
    app = request.app
    name = request.match_info["name"]
    if not valid_node_name(name):
        return json_error(400, "bad_node_name", f"node names are {NODE_NAME_HELP}")
    node = await node_login(request, name, UNAVAILABLE)
    if isinstance(node, web.Response):
        return node
    if not node.display:
        return json_error(403, "no_display_right",
                          f"node {name} may not read the swarm; 'tswarm node display {name} on' allows it")
    try:
        offset, limit = parse_query(request.query)
    except BadParameter as exc:
        return json_error(400, "bad_parameter", str(exc))
    try:
        halted_all, nodes = await app[keys.STORAGE].read(lambda storage: storage.swarm_nodes())
    except StorageUnavailable as exc:
        return unavailable(name, exc, UNAVAILABLE)
    doc = swarm_summary(nodes, halted_all=halted_all, config=app[keys.CONFIG], sleep=node.interval_s,
                        offset=offset, limit=limit, now_ns=time.time_ns(), requester=name)
    return web.Response(body=json.dumps(doc, separators=(",", ":")).encode(), content_type="application/json",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/nodes/{name}/swarm", get_swarm, allow_head=False)
