"""The PostgreSQL engine (``DATABASE_URL`` / ``TSWARM_DATABASE_URL``): the registry and the journal in
one database that any number of instances share, a room per concern as in the SQLite engine.

``connection`` (the URL, the pool, transactions, the snapshot, failures), ``schema`` (DDL, version,
migrations, the triggers that announce registry changes), ``registry``, ``cache`` (nodes' records
kept per process, cleared by LISTEN/NOTIFY), ``writer``, ``outbox``, ``reads`` (the one WHERE builder), ``retention``,
``meta`` (the one upsert), ``lock`` (the singleton lock), ``firmware`` (bundles, what is staged, what
nodes report), ``alerts`` (each node's judged state and the alerts' outbox), ``dump`` (moving house: the whole journal out, or into an empty database); each room a mixin over the same pool, combined here into
:class:`PostgresStorage`. psycopg 3 and psycopg_pool do the talking.
"""
from __future__ import annotations

from typing import Optional

import psycopg

from ..interface import Storage, StorageUnusable
from .cache import LoopSnapshot, RegistryCache, close_cache, open_cache
from .connection import FAILURES, POOL_SIZE, close_pool, libpq_url, open_pool, redact, scrub, unavailable
from .alerts import AlertsRoom
from .dump import DumpRoom
from .firmware import FirmwareRoom
from .lock import LockRoom
from .meta import MetaRoom
from .outbox import OutboxRoom
from .reads import ReadsRoom
from .registry import RegistryRoom
from .retention import RetentionRoom
from .schema import SCHEMA_VERSION, schema_version, upgrade
from .writer import PostgresWriter, WriterRoom

__all__ = ["SCHEMA_VERSION", "PostgresStorage", "PostgresWriter", "redact"]


class PostgresStorage(
    RegistryRoom, WriterRoom, OutboxRoom, ReadsRoom, RetentionRoom, MetaRoom, LockRoom, FirmwareRoom, AlertsRoom, DumpRoom,
    Storage
):
    """The journal in the database at ``url``: its schema brought up to date (``create``; else
    :class:`StorageUnusable` when the database holds none), on connections borrowed from the
    process's one pool for that URL (at most ``pool_size`` connections, however many storages the
    process opens: service/storage/postgres/connection.py). The writer has a connection of its own;
    the process's cache of nodes' records, taken at the first ``node_auth``, one more (its listener).

    :class:`~tswarm.storage.StorageUnavailable` when the server cannot be reached, now or on any
    later call (each call after the server returns works again: the pool reconnects)."""

    engine = "postgresql"

    def __init__(self, url: str, *, create: bool = True, pool_size: int = POOL_SIZE):
        self._url = url = libpq_url(url)  # the pool's, the writer's, the lock's and the listener's
        self.where = redact(url)  # the URL to show: its password is ***
        self._pinned = None
        self._closed = False

        def prepare(conn: psycopg.Connection) -> None:
            if not create and schema_version(conn) == 0:
                raise StorageUnusable(
                    f"no journal in {self.where}: 'tswarm node add' or 'tswarm serve' creates it"
                    " (is DATABASE_URL or TSWARM_DATABASE_URL right?)"
                )
            upgrade(conn, self.where)

        try:
            self.pool = open_pool(url, pool_size, prepare)
        except FAILURES as exc:
            raise unavailable(exc, url) from None
        except psycopg.Error as exc:  # not a URL libpq can read, no right to create tables, not tswarm's ...
            raise StorageUnusable(scrub(f"cannot use journal {self.where}: {exc}".splitlines()[0], url)) from None

    def __repr__(self) -> str:
        return f"<PostgresStorage {self.where}>"

    def _take_registry_cache(self) -> Optional[RegistryCache]:
        if self._closed:
            return None
        cache = open_cache(self._url, self)  # two threads at once: the same cache, taken once
        if self._closed:  # closed meanwhile by another thread
            close_cache(self._url, self)
            return None
        self._registry_cache = cache
        return cache

    def registry_snapshot(self) -> LoopSnapshot:
        return LoopSnapshot(self._url)

    def close(self) -> None:
        """Give back the pool and the registry cache (the process's last storage of this URL to hold
        each closes it); twice is once."""
        if not self._closed:
            self._closed = True
            if self._registry_cache is not None:
                close_cache(self._url, self)
                self._registry_cache = None
            close_pool(self._url, self.pool)
