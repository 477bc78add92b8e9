"""The SQLite engine: one file, ``tswarm.db`` in the data dir, WAL, a room per concern.

``schema`` (DDL, version, migrations, connections, transactions), ``registry``, ``writer``,
``outbox``, ``reads`` (the one WHERE builder), ``retention``, ``meta`` (the one upsert), ``lock`` (the
singleton lock: the data dir's), ``firmware`` (bundles, what is staged, what nodes report), ``alerts`` (each node's judged
state and the alerts' outbox), ``dump``
(moving house: the whole journal out, or into an empty data dir); each room a mixin over the same
connection, combined here into :class:`SqliteStorage`.
"""
from __future__ import annotations

from pathlib import Path

from ..interface import Storage
from .alerts import AlertsRoom
from .dump import DumpRoom
from .firmware import FirmwareRoom
from .lock import LockRoom
from .meta import MetaRoom
from .outbox import OutboxRoom
from .reads import ReadsRoom
from .registry import RegistryRoom
from .retention import RetentionRoom
from .schema import DB_FILENAME, SCHEMA_VERSION, check_data_dir, open_connection
from .writer import SqliteWriter, WriterRoom

__all__ = ["DB_FILENAME", "SCHEMA_VERSION", "SqliteStorage", "SqliteWriter", "check_data_dir"]


class SqliteStorage(
    RegistryRoom, WriterRoom, OutboxRoom, ReadsRoom, RetentionRoom, MetaRoom, LockRoom, FirmwareRoom, AlertsRoom, DumpRoom,
    Storage
):
    """The journal at ``path``: the data dir checked, the schema brought up to date, one connection."""

    engine = "sqlite"

    def __init__(self, path: Path | str, *, create: bool = True):
        self.path = Path(path)
        self.where = str(self.path)
        self.conn = open_connection(self.path, create=create)

    @classmethod
    def open(cls, data_dir: Path | str, *, create: bool = True) -> "SqliteStorage":
        return cls(Path(data_dir) / DB_FILENAME, create=create)

    def close(self) -> None:
        self.conn.close()
