"""What a worker does because it has siblings (``tswarm serve --workers N``, see service/workers.py).

Every worker is the whole service on the shared port, with its own app, journal connection and
writer. SQLite's write lock puts their commits in one order (timestamps: JournalWriter._commit).
What must run once, the forwarder and the pruner, runs in worker 0 only (``create_app``).

The forwarder is woken by its own writer's commits; readings that other workers commit are seen
by :func:`commit_watch_ctx`, which polls ``PRAGMA data_version`` (it changes whenever another
connection, in any process, commits) every :data:`COMMIT_POLL_S` and wakes the forwarder.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from . import keys
from .forwarder import FORWARDER
from .journal import DB_FILENAME, Journal

log = logging.getLogger("tswarm.workers")

COMMIT_POLL_S = 0.5  # with workers > 1: how soon worker 0's forwarder notices another worker's readings


async def commit_watch_ctx(app: web.Application):
    """Worker 0 with store=influxdb: wake the forwarder when any other process committed."""
    if FORWARDER not in app:
        yield
        return
    forwarder = app[FORWARDER]
    journal = await asyncio.to_thread(Journal, app[keys.CONFIG].data_dir / DB_FILENAME)

    async def watch() -> None:
        seen = await asyncio.to_thread(journal.data_version)
        while True:
            await asyncio.sleep(COMMIT_POLL_S)
            try:
                version = await asyncio.to_thread(journal.data_version)
            except Exception:  # the disk: the forwarder's own supervisor reports it; keep watching
                log.exception("could not read the journal's data_version")
                continue
            if version != seen:
                seen = version
                forwarder.wake.set()

    task = asyncio.create_task(watch(), name="commit-watch")
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await asyncio.to_thread(journal.close)
