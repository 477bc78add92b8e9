"""Storage: one interface (:mod:`.interface`), SQLite its first engine (:mod:`.sqlite`).

``open_storage(data_dir)`` is how every caller gets one; the records and errors are here too.
Nothing outside this package writes SQL.
"""
from __future__ import annotations

from pathlib import Path

from .interface import (
    FORWARD_CURSOR,
    FORWARD_LAST_ERROR,
    HALT_ALL,
    PRUNED_BEFORE,
    NodeAuth,
    NodeExists,
    NodeNotFound,
    NodeStatus,
    OutboxReading,
    Storage,
    StorageError,
    StorageUnavailable,
    StorageUnusable,
    Writer,
)
from .sqlite import DB_FILENAME, SqliteStorage, check_data_dir

__all__ = [
    "DB_FILENAME", "FORWARD_CURSOR", "FORWARD_LAST_ERROR", "HALT_ALL", "PRUNED_BEFORE",
    "NodeAuth", "NodeExists", "NodeNotFound", "NodeStatus", "OutboxReading",
    "Storage", "StorageError", "StorageUnavailable", "StorageUnusable", "Writer",
    "check_data_dir", "open_storage",
]


def open_storage(data_dir: Path | str) -> Storage:
    """The journal of ``data_dir`` (created if new, upgraded if old); :class:`StorageUnusable` if it
    cannot be used. Close it, or use it as a context manager."""
    return SqliteStorage.open(data_dir)
