"""Storage: one interface (:mod:`.interface`), two engines: SQLite in the data dir (:mod:`.sqlite`,
the default) and PostgreSQL (:mod:`.postgres`, a ``postgres://`` URL in ``DATABASE_URL`` /
``TSWARM_DATABASE_URL``).

``storage_for(config)`` (or ``open_storage(data_dir, database_url)``) is how every caller gets one;
the records and errors are here too. Nothing outside this package writes SQL.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .interface import (
    EXTRA_FIELDS,
    NO_EXTRA,
    FORWARD_CURSOR,
    FORWARD_LAST_ERROR,
    HALT_ALL,
    PRUNED_BEFORE,
    READ_TOKEN,
    AlertChange,
    AlertState,
    BundleFile,
    Duplicate,
    FirmwareState,
    NodeAuth,
    NodeExists,
    NodeNotFound,
    NodeStatus,
    OutboxReading,
    OutboxReadingExtra,
    PendingAlert,
    ReadingExtra,
    SingletonLock,
    Storage,
    StorageError,
    StorageUnavailable,
    StorageUnusable,
    Writer,
)
from .sqlite import DB_FILENAME, SqliteStorage, check_data_dir

__all__ = [
    "DB_FILENAME", "EXTRA_FIELDS", "FORWARD_CURSOR", "FORWARD_LAST_ERROR", "HALT_ALL", "NO_EXTRA", "PRUNED_BEFORE",
    "READ_TOKEN", "AlertChange", "AlertState", "BundleFile", "Duplicate", "FirmwareState", "NodeAuth", "NodeExists", "NodeNotFound", "NodeStatus",
    "OutboxReading", "OutboxReadingExtra", "PendingAlert", "ReadingExtra", "SingletonLock",
    "Storage", "StorageError", "StorageUnavailable", "StorageUnusable", "Writer",
    "check_data_dir", "open_storage", "storage_for",
]


def open_storage(
    data_dir: Path | str, database_url: str = "", *, existing: bool = False, pool_size: Optional[int] = None
) -> Storage:
    """The journal: in PostgreSQL when ``database_url`` is given (a ``postgres://`` or ``postgresql://``
    URL, as the settings check), else in ``data_dir`` (SQLite). Created if new (``existing``: a database or a file without
    one is refused), upgraded if old; :class:`StorageUnusable` if it cannot be used, :class:`StorageUnavailable`
    if its server cannot be reached. Close it, or use it as a context manager."""
    if database_url:
        from .postgres import PostgresStorage  # psycopg only where it is used

        sized = {} if pool_size is None else {"pool_size": pool_size}  # most connections of the process's one pool
        return PostgresStorage(database_url, create=not existing, **sized)
    return SqliteStorage.open(data_dir, create=not existing)


def storage_for(config: Any, *, existing: bool = False) -> Storage:
    """The journal that ``config`` (a :class:`~tswarm.settings.Config`) names: its database URL, else its data dir."""
    return open_storage(config.data_dir, config.database_url, existing=existing, pool_size=config.database_pool)
