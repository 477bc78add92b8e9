"""The application factory: one ``create_app(config)``, where every resource of the app is declared.

The keys are in service/keys.py; here each is set, either directly (the state that needs no
starting) or by one cleanup context per resource, in the order they start (and the reverse of the
order they stop). The route modules only add routes.
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import admin, firmware_routes, keys, metrics, protocol, proxy, readers, swarm, web as status_page
from .alerts import alerting
from .auth import CredentialCache, LoginGuard
from .errors import RETRY_AFTER_STORAGE
from .forwarder import forwarding
from .leader import Leader
from .metrics import Metrics, count_requests, metrics_ctx
from .pool import StoragePool
from .readers import readers_ctx
from .storage import Storage, StorageUnavailable, storage_for
from .store_status import store_status
from .retention import pruning
from .settings import Config


async def _journal_ctx(app: web.Application):
    config = app[keys.CONFIG]
    journal = storage_for(config)
    writer = journal.writer(synchronous=config.journal_synchronous, max_batch=config.journal_max_batch)
    await writer.start()
    app[keys.JOURNAL] = journal
    app[keys.WRITER] = writer
    yield
    await writer.close()  # commits what waits: in-flight requests get their answer
    journal.close()


async def _storage_ctx(app: web.Application):
    """Threads with connections of their own for the storage calls of requests (service/pool.py)."""
    config = app[keys.CONFIG]
    pool = StoragePool(lambda: storage_for(config), outages=app[keys.WRITER])
    app[keys.STORAGE] = pool
    yield
    await asyncio.get_running_loop().run_in_executor(None, pool.close)  # a write may still wait for a lock


async def _hasher_ctx(app: web.Application):
    """scrypt runs here, never on the event loop; it releases the GIL, so this uses every core."""
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="scrypt")
    app[keys.HASHER] = executor
    yield
    executor.shutdown(wait=False, cancel_futures=True)


async def _leader_ctx(app: web.Application):
    """The forwarder (``store=influxdb``), the pruner (a retention) and the alerts (``TSWARM_ALERT_WEBHOOK``)
    run in one process of all those on the journal: the one holding its singleton lock (service/leader.py).
    On PostgreSQL every process competes; on SQLite, worker 0 (``Config.runs_singletons``). With none
    to run, nobody asks."""
    config = app[keys.CONFIG]
    duties = []
    if config.store == "influxdb":
        duties.append(("forwarder", lambda: forwarding(app)))  # it listens to WRITER's commits
    if config.retention_s > 0:
        duties.append(("pruner", lambda: pruning(app)))
    if config.alert_webhook:
        duties.append(("alerts", lambda: alerting(app)))
    leader = Leader(app[keys.JOURNAL].singleton_lock, duties)
    app[keys.LEADER] = leader
    if duties and config.runs_singletons:
        await leader.start()  # asks once before the first request: a lone service forwards from the start
    yield
    await leader.close()


HEALTH_TIMEOUT_S = 2.0  # /healthz waits this long for the journal, then says it is unreachable


def _health(journal: Storage, config: Config) -> dict:
    """What /healthz reads from the journal, in a storage thread: one query at least (with store=sqlite
    :func:`store_status` asks nothing), so an unreachable database shows."""
    journal.halted_all()
    return store_status(journal, config)


async def healthz(request: web.Request) -> web.Response:
    """ok, store, and the forwarder's backlog (see :func:`store_status`); which storage engine and
    whether it answers; whether this process leads (runs the forwarder and the pruner); what waits
    to commit; and which process answered (``worker``: its index with ``--workers N``, 0 otherwise;
    ``pid``). The journal is read in a storage thread, never on the event loop: a database that does
    not answer within ``HEALTH_TIMEOUT_S`` is a 503 with the reason."""
    app = request.app
    config = app[keys.CONFIG]
    journal, leader = app[keys.JOURNAL], app[keys.LEADER]
    storage = {"engine": journal.engine, "where": journal.where}
    process = {"leader": leader.leading, "worker": config.worker, "pid": os.getpid()}
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            found = await app[keys.STORAGE].read(_health, config)
    except (StorageUnavailable, TimeoutError) as exc:
        reason = str(exc) or f"the journal at {journal.where} did not answer within {HEALTH_TIMEOUT_S:g} s"
        return web.json_response({
            "error": "storage_unavailable", "detail": reason, "ok": False, "store": config.store,
            "storage": {**storage, "reachable": False, "reason": reason}, **process,
            "queued": app[keys.WRITER].queued,
        }, status=503, headers={"Retry-After": RETRY_AFTER_STORAGE})
    status = {"ok": True, **found, "storage": {**storage, "reachable": True}, **process}
    forwarder = leader.running.get("forwarder")
    if forwarder is not None:
        status["in_flight"] = forwarder.in_flight
    status["queued"] = app[keys.WRITER].queued
    return web.json_response(status)


def create_app(config: Config) -> web.Application:
    # proxy first: everything after it sees the real client address and scheme (service/proxy.py); then
    # one middleware that answers errors as JSON and counts every answer (service/metrics.py)
    app = web.Application(
        middlewares=[*proxy.middlewares(config), count_requests], client_max_size=config.max_body
    )
    # State that needs no starting.
    app[keys.CONFIG] = config
    app[keys.CREDENTIALS] = CredentialCache()
    app[keys.GUARD] = LoginGuard(config.auth_max_failures, config.auth_window)
    app[keys.STATS] = keys.Stats()
    app[keys.METRICS] = Metrics(app)

    # Resources, in the order they start.
    app.cleanup_ctx.append(_hasher_ctx)  # HASHER
    app.cleanup_ctx.append(_journal_ctx)  # JOURNAL, WRITER
    app.cleanup_ctx.append(_storage_ctx)  # STORAGE
    app.cleanup_ctx.append(readers_ctx)  # READERS
    app.cleanup_ctx.append(metrics_ctx)  # hooks WRITER's commits into METRICS
    app.cleanup_ctx.append(_leader_ctx)  # LEADER: the forwarder, the pruner, the alerts, in one process of all
    app.on_startup.append(status_page.keep_read_token)  # KEPT_READ_TOKEN (no TSWARM_READ_TOKEN); after the contexts

    app.router.add_get("/healthz", healthz)
    protocol.setup_routes(app)
    firmware_routes.setup_routes(app)
    swarm.setup_routes(app)
    metrics.setup_routes(app)
    readers.setup_routes(app)
    admin.setup_routes(app)
    status_page.setup_routes(app)
    return app
