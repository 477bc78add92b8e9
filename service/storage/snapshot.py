"""Nodes' records served on the event loop: no storage read, no thread hop, for a node whose record
has not changed; any change, from anywhere, seen by the very next request.

Every node request needs its node's record (:meth:`Storage.node_auth`: password hash, created,
halted, interval, firmware). Read in a storage thread (service/pool.py), that is a hand-off to a
thread and back plus a query, per request, for a record that changes a few times a year. A
:class:`RegistrySnapshot` is what an engine offers the event loop instead (:meth:`Storage.registry_snapshot`,
used by :meth:`~tswarm.pool.StoragePool.node_auth`):

- :meth:`~RegistrySnapshot.current` (on the loop, no I/O beyond what the engine says): the record of
  ``name`` when the engine knows it is exact now, else None: a miss;
- a miss is read in a storage thread, :meth:`~RegistrySnapshot.read` (the record and the engine's
  token of the registry's state it was read at, together), and handed back on the loop to
  :meth:`~RegistrySnapshot.keep`, which keeps it only if the token is still the snapshot's own.

The engines:

- SQLite (service/storage/sqlite/snapshot.py): a counter in the journal (``registry_version``,
  schema version 5) that triggers move on every change of ``nodes`` and of the halt-all row, in
  the change's own transaction, whoever writes (this process, the CLI, another worker, the sqlite3
  shell). The loop reads it on a read-only connection of its own, never blocking (one ``SELECT`` of
  one row; SQLITE_BUSY or any error: the snapshot is bypassed and the record read in a thread, as
  before), and only when the WAL index's header shows a commit since it last read it: while nobody
  commits, a lookup asks SQLite nothing. A changed counter clears the snapshot.
- PostgreSQL (service/storage/postgres/cache.py): the process's :class:`RegistryCache`, kept exact
  by LISTEN/NOTIFY, answers on the loop (its check is a ``poll`` of the listener's socket, no round
  trip); a miss reads and fills it in a thread as before.

Unknown names are never kept (anyone can send any name). A refusal still does not rest on a
snapshot: before a 401, a 405 or a 423 the record is read fresh in a thread (service/auth.py,
service/protocol.py).

No aiohttp here, and no thread of its own: :meth:`current` and :meth:`keep` run on the event loop,
:meth:`read` in a storage thread with that thread's storage.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .interface import NodeAuth

if TYPE_CHECKING:
    from .interface import Storage


class RegistrySnapshot:
    """The engine-neutral face of a snapshot. This one keeps nothing: every lookup is read in a
    storage thread (an engine without a snapshot of its own)."""

    def current(self, name: str) -> Optional[NodeAuth]:
        """On the event loop: the record of ``name`` when it is exact now, else None (read it)."""
        return None

    def read(self, storage: Storage, name: str, fresh: bool = False) -> tuple[Any, Optional[NodeAuth]]:
        """In a storage thread, with that thread's ``storage``: ``(token, record)``, the record as
        :meth:`Storage.node_auth` gives it and the registry's state it was read at."""
        return None, storage.node_auth(name, fresh=fresh)

    def keep(self, name: str, token: Any, record: Optional[NodeAuth]) -> None:
        """On the event loop, after :meth:`read`: keep ``record`` for the next lookups if ``token`` is
        still the registry's state the snapshot serves."""

    def close(self) -> None:
        """Release what the snapshot holds (twice is once; from any thread)."""
