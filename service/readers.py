"""Reader routes: ``GET /api/nodes`` (who is alive), ``GET /api/nodes/{name}`` (one of them) and
``GET /api/readings`` (streamed export). Nodes only ever PUT/POST; these GETs are for people.

Both need a reader (see :mod:`tswarm.access`). The export runs its SQLite iteration in a
thread of its own with its own connection and hands chunks to the event loop over a small
bounded queue: memory stays constant whatever the range, and node requests keep being
answered while a big export streams. The rows come from :func:`tswarm.export.export_chunks`,
the same code path as ``tswarm export``. With ``store=influxdb``, rows the journal pruned come from
InfluxDB (service/history.py); when it cannot answer, the reader gets a 503 before the first byte.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterator, Optional

from aiohttp import web

from . import keys
from .access import readers_only
from .errors import json_error
from .export import CONTENT_TYPES, BadParameter, UnknownNode, check_node, encode_cursor, export_args, export_chunks
from .history import CursorExpired, HistoryUnavailable, open_history, plan
from .storage import StorageUnavailable, storage_for
from .metrics import client_gone
from .names import NODE_NAME_HELP, valid_node_name
from .nodes import nodes_report
from .settings import Config
from .timefmt import shown

log = logging.getLogger("tswarm.readers")

MAX_CONCURRENT_EXPORTS = 4  # more wait their turn: each one is a long SQLite scan
QUEUE_CHUNKS = 4  # chunks (a few thousand rows each) waiting between the export thread and the socket
READINGS_PARAMS = {"node", "start", "stop", "format", "limit", "cursor"}
# A time with a zone offset as typed into a URL: a query's '+' is a space, so '...T12:04:19+01:00'
# arrives as '...T12:04:19 01:00'. A space there can be nothing else (docs/api.md).
_OFFSET_AS_SPACE = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d{1,9})?) (\d{2}:?\d{2})", re.ASCII)


def _time_param(value: Optional[str]) -> Optional[str]:
    """``start``/``stop`` as given, with the '+' of a zone offset back where form-decoding made it a space."""
    found = None if value is None else _OFFSET_AS_SPACE.fullmatch(value.strip())
    return value if found is None else f"{found[1]}+{found[2]}"


async def readers_ctx(app: web.Application):
    """The threads exports run in."""
    executor = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_EXPORTS, thread_name_prefix="export")
    app[keys.READERS] = executor
    yield
    executor.shutdown(wait=False, cancel_futures=True)


# -- GET /api/nodes ----------------------------------------------------------------------------


async def _nodes_report(app: web.Application) -> dict:
    """:func:`tswarm.nodes.nodes_report`, read in a storage thread."""
    return await app[keys.STORAGE].read(nodes_report, app[keys.CONFIG], time.time_ns())


@readers_only
async def get_nodes(request: web.Request) -> web.Response:
    """Every node with its last reading and health (see service/health.py)."""
    return web.json_response(await _nodes_report(request.app))


@readers_only
async def get_node(request: web.Request) -> web.Response:
    """One node as in ``GET /api/nodes``; 404 when there is no such node, 400 for a name no node can
    have (so the 404 quotes only a name that could be one: short, and nothing to escape)."""
    name = request.match_info["name"]
    if not valid_node_name(name):
        return json_error(400, "bad_node_name", f"node names are {NODE_NAME_HELP}")
    for node in (await _nodes_report(request.app))["nodes"]:
        if node["name"] == name:
            return web.json_response(node)
    return json_error(404, "unknown_node", f"no node named {name!r}; GET /api/nodes lists them")


# -- GET /api/readings -------------------------------------------------------------------------


def parse_readings_query(query) -> dict:
    """The export's keyword arguments from the query string, every parameter checked by
    :func:`tswarm.export.export_args` (as ``tswarm export`` does): BadParameter says what to fix.
    Whether the node exists is asked of the journal after (:func:`tswarm.export.check_node`)."""
    unknown = set(query) - READINGS_PARAMS
    if unknown:
        raise BadParameter(
            "", f"unknown parameter {shown(sorted(unknown)[0])}; known: {', '.join(sorted(READINGS_PARAMS))}"
        )
    for name in sorted(READINGS_PARAMS):
        if len(query.getall(name, ())) > 1:
            raise BadParameter(name, f"give {name} once")
    args = export_args(
        fmt=query.get("format", "csv"), node=query.get("node"), start=_time_param(query.get("start")),
        stop=_time_param(query.get("stop")), limit=query.get("limit"), cursor=query.get("cursor"),
    )
    return args


def export_with_page_end(config: Config, args: dict) -> Iterator:
    """Runs in an export thread with its own connection: first the page (:class:`tswarm.history.Page`:
    the cursor to resume after it, and whether rows follow already), then the export as bytes, all
    from one snapshot of the journal.

    The export's first chunk is made before the page is handed over, so everything that can fail
    before streaming (InfluxDB unreachable for pruned readings, a cursor that cannot resume) fails
    before the headers."""
    with storage_for(config) as journal, journal.snapshot(), \
            open_history(config) or contextlib.nullcontext() as influx:
        bounds = {k: v for k, v in args.items() if k in ("node", "start_ns", "stop_ns", "after", "limit")}
        page = plan(journal, influx, **bounds)
        with contextlib.closing(export_chunks(journal, **args, influx=influx, page=page)) as chunks:  # closed before the journal
            first = next(chunks, None)
            yield page
            if first is not None:
                yield first.encode("utf-8")
            for chunk in chunks:
                yield chunk.encode("utf-8")


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


async def iterate_in_thread(
    executor: concurrent.futures.Executor, produce: Callable[[], Iterator], maxsize: int = QUEUE_CHUNKS
) -> AsyncIterator:
    """Run the blocking generator ``produce()`` in ``executor`` and yield its items on the event loop.

    At most ``maxsize`` items wait in between (the thread blocks while that many wait), so
    memory stays constant. When the consumer stops early (client gone, shutdown), the thread
    stops at its next item and the generator is closed (its ``finally``/``with`` blocks run).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()  # ``slots`` bounds it
    slots = threading.Semaphore(maxsize)  # items handed over and not yet taken: the thread waits for one
    stop = threading.Event()

    def hand_over(item) -> bool:
        # The thread waits only when ``maxsize`` items wait: a hand-over is one call_soon_threadsafe,
        # not a round trip to the loop (waiting on each put cost the export thread about a sixth of
        # its time, the loop being slow to take the GIL back from it).
        while not slots.acquire(timeout=0.5):
            if stop.is_set():
                return False
        if stop.is_set():
            return False
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def pump() -> None:
        if stop.is_set():
            return
        items = produce()
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(_DONE)
        except Exception as exc:
            hand_over(_Failed(exc))
        finally:
            items.close()

    loop.run_in_executor(executor, pump)
    try:
        while True:
            item = await queue.get()
            slots.release()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        slots.release()  # a thread waiting for a slot wakes and sees `stop`
        while not queue.empty():
            queue.get_nowait()


@readers_only
async def get_readings(request: web.Request) -> web.StreamResponse:
    """Readings as CSV or NDJSON, oldest first, streamed (see docs/api.md for the parameters)."""
    try:
        args = parse_readings_query(request.query)
        if args["node"] is not None:  # a storage thread: on PostgreSQL this is a round trip
            await request.app[keys.STORAGE].read(check_node, args["node"])
    except BadParameter as exc:
        return json_error(400, "bad_parameter", str(exc))
    except UnknownNode as exc:
        return json_error(404, "unknown_node", f"{exc}; GET /api/nodes lists them")

    config = request.app[keys.CONFIG]
    chunks = iterate_in_thread(request.app[keys.READERS], lambda: export_with_page_end(config, args))
    async with contextlib.aclosing(chunks):
        try:
            page = await anext(chunks)
        except HistoryUnavailable as exc:
            return json_error(503, "history_unavailable", str(exc), headers={"Retry-After": "60"})
        except CursorExpired as exc:
            return json_error(410, "cursor_expired", str(exc))
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[args["fmt"]], "Cache-Control": "no-store"})
        token = encode_cursor(page.resume)
        response.headers["X-Resume-Cursor"] = token  # every answer: where to catch up from later
        if page.more:  # rows follow already: the next page
            response.headers["X-Next-Cursor"] = token
            response.headers["Link"] = f'<{request.rel_url.update_query(cursor=token)}>; rel="next"'
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except ConnectionResetError:  # the reader hung up: stop the export thread, nothing to answer
            client_gone(request)
            return response
        except Exception as exc:
            # Headers are gone: all we can do is end the body without its last chunk, which
            # tells the client the export is incomplete. An outage (PostgreSQL or InfluxDB going
            # away) is one line; anything else is a bug, with its traceback.
            if isinstance(exc, (StorageUnavailable, HistoryUnavailable)):
                log.warning("export cut short (the reader sees an incomplete body): %s", exc)
            else:
                log.exception("export failed while streaming")
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
    return response


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/nodes", get_nodes)
    app.router.add_get("/api/nodes/{name}", get_node, allow_head=False)
    app.router.add_get("/api/readings", get_readings, allow_head=False)  # a HEAD would run the export
