"""The application factory: one ``create_app(config)``, one cleanup context per resource."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import admin, keys, proxy, readers, web as status_page
from .auth import CredentialCache, LoginGuard
from .errors import json_errors
from .forwarder import FORWARDER, forwarder_ctx
from .storage import open_storage
from .store_status import store_status
from .metrics import count_requests, setup_metrics
from .protocol import setup_routes
from .retention import retention_ctx
from .settings import Config


async def _journal_ctx(app: web.Application):
    config = app[keys.CONFIG]
    journal = open_storage(config.data_dir)
    writer = journal.writer(synchronous=config.journal_synchronous, max_batch=config.journal_max_batch)
    await writer.start()
    app[keys.JOURNAL] = journal
    app[keys.WRITER] = writer
    yield
    await writer.close()  # commits what waits: in-flight requests get their answer
    journal.close()


async def _hasher_ctx(app: web.Application):
    """scrypt runs here, never on the event loop; it releases the GIL, so this uses every core."""
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="scrypt")
    app[keys.HASHER] = executor
    yield
    executor.shutdown(wait=False, cancel_futures=True)


async def healthz(request: web.Request) -> web.Response:
    """ok, store, and the forwarder's backlog (see :func:`store_status`), plus what waits to commit,
    and which process answered (``worker``: its index with ``--workers N``, 0 otherwise; ``pid``)."""
    app = request.app
    config = app[keys.CONFIG]
    status = {"ok": True, **store_status(app[keys.JOURNAL], config), "worker": config.worker, "pid": os.getpid()}
    if FORWARDER in app:
        status["in_flight"] = app[FORWARDER].in_flight
    status["queued"] = app[keys.WRITER].queued
    return web.json_response(status)


def create_app(config: Config) -> web.Application:
    # proxy first: everything after it sees the real client address and scheme (service/proxy.py)
    app = web.Application(
        middlewares=[*proxy.middlewares(config), count_requests, json_errors], client_max_size=config.max_body
    )
    app[keys.CONFIG] = config
    app[keys.CREDENTIALS] = CredentialCache()
    app[keys.GUARD] = LoginGuard(config.auth_max_failures, config.auth_window)
    app[keys.STATS] = keys.Stats()
    app.cleanup_ctx.append(_hasher_ctx)
    app.cleanup_ctx.append(_journal_ctx)
    if config.runs_singletons:  # one process of `--workers N` forwards and prunes; two would race on the cursor
        app.cleanup_ctx.append(forwarder_ctx)  # store=influxdb only; after the journal: it needs the writer
        app.cleanup_ctx.append(retention_ctx)
    app.router.add_get("/healthz", healthz)
    setup_routes(app)
    setup_metrics(app)  # after the journal's context: it hooks the writer's commits
    readers.setup_routes(app)
    admin.setup_routes(app)
    status_page.setup_routes(app)
    return app
