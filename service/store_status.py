"""What ``/healthz`` and ``tswarm status`` say about the store: which one, and with InfluxDB the
forwarder's backlog, read from the journal (no server needed, so ``tswarm status`` works offline).

No aiohttp and no influxdb-client here: ``tswarm status`` imports neither.
"""
from __future__ import annotations

import json
import time
from typing import Optional

from .influx import endpoint
from .storage import FORWARD_LAST_ERROR, Storage
from .settings import Config


def store_status(journal: Storage, config: Config, now_ns: Optional[int] = None) -> dict:
    """What ``/healthz`` and ``tswarm status`` show: the store and, for InfluxDB, the backlog.

    ``backlog``: readings acknowledged to nodes but not yet to InfluxDB; ``oldest_age_s``: how
    long the oldest of them has waited; ``last_error``: why the last write failed (null once
    writes succeed again); ``rejected``: readings InfluxDB refused for good (kept in the journal).
    """
    status: dict = {"store": config.store, "backlog": 0, "oldest_age_s": None, "last_error": None}
    if config.store != "influxdb":
        return status
    now_ns = time.time_ns() if now_ns is None else now_ns
    # One snapshot: the forwarder (of another instance, on PostgreSQL) moves the cursor and the writers
    # add readings between these reads; read apart, the backlog could count readings the oldest
    # unforwarded one (None) says are forwarded, or the cursor disagree with the backlog.
    with journal.snapshot():
        cursor = journal.forward_cursor()
        oldest = journal.oldest_unforwarded_ts()
        last_error = journal.meta(FORWARD_LAST_ERROR)
        last_id = journal.last_reading_id()
        rejected = journal.count_rejected()
    status.update(
        influxdb=endpoint(config).where,
        backlog=max(0, last_id - cursor),  # ids above the cursor have no gaps
        oldest_age_s=None if oldest is None else round(max(0, now_ns - oldest) / 1e9, 3),
        last_error=json.loads(last_error) if last_error else None,
        rejected=rejected,
        forward_cursor=cursor,
        retention_s=config.retention_s,
    )
    return status
