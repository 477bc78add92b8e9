"""Retention: prune old readings from the journal so the disk does not fill.

``TSWARM_JOURNAL_RETENTION`` (see :attr:`Config.retention_s`):

- ``store=influxdb``: readings older than the retention (default 30 days) are deleted once they
  are forwarded (``id <= cursor``); a reading InfluxDB has not acknowledged is never pruned.
- ``store=sqlite``: the journal is the only copy, so nothing is pruned unless the setting is
  given explicitly; then readings older than it are deleted.

Readings InfluxDB refused for good stay in the ``rejected`` table whatever the retention.

Each prune moves the journal's horizon (:meth:`Storage.pruned_before`); exports read what lies
below it back from InfluxDB (:mod:`tswarm.history`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator, Optional

from aiohttp import web

from . import keys
from .storage import Storage, StorageUnavailable, storage_for
from .settings import Config

log = logging.getLogger("tswarm.retention")

PRUNE_EVERY_S = 600.0


def prune(journal: Storage, config: Config, now_ns: Optional[int] = None) -> int:
    """Delete the readings the retention no longer keeps; returns how many."""
    if config.retention_s <= 0:
        return 0
    now_ns = time.time_ns() if now_ns is None else now_ns
    before = now_ns - config.retention_s * 1_000_000_000
    up_to = journal.forward_cursor() if config.store == "influxdb" else None
    return journal.prune_readings(before, up_to_id=up_to)


@contextlib.asynccontextmanager
async def pruning(app: web.Application) -> AsyncIterator[None]:
    """Prune at start and every ten minutes while the block runs, on its own connection and thread.
    Entered by the process that holds the singleton lock (service/leader.py)."""
    config = app[keys.CONFIG]
    if config.retention_s <= 0:
        yield
        return

    def prune_once() -> None:
        with storage_for(config) as journal:
            pruned = prune(journal, config)
        if pruned:
            log.info("pruned %d reading(s) older than the journal's retention (%d s)", pruned, config.retention_s)

    async def loop() -> None:
        while True:
            try:
                await asyncio.to_thread(prune_once)
            except StorageUnavailable as exc:  # the database is away: one line, not a traceback
                log.warning("pruning waits for the journal (%s); trying again in %d s", exc, PRUNE_EVERY_S)
            except Exception:
                log.exception("pruning the journal failed; trying again later")
            await asyncio.sleep(PRUNE_EVERY_S)

    task = asyncio.create_task(loop(), name="retention")
    try:
        yield
    finally:
        task.cancel()  # a prune under way finishes its chunk in its thread: deleting forwarded readings twice is harmless
        try:
            await task
        except asyncio.CancelledError:
            pass
