"""The registry: nodes, their passwords, halts, intervals and display rights (and, in the same rows,
their firmware state: service/storage/postgres/firmware.py writes it)."""
from __future__ import annotations

import time
from typing import Optional

from ..interface import FIRMWARE_COLUMNS, HALT_ALL, FirmwareState, NodeAuth, NodeExists, NodeNotFound, NodeStatus
from .cache import RegistryCache, changed_here
from .connection import Connections
from .meta import get_meta, put_meta

# Each registered node with its newest reading: one statement, one lookup per node in
# readings_node_ts (node_id, ts); the join fetches that row.
def _list_nodes(extra: str = "") -> str:
    return f"""
SELECT nodes.name, nodes.registered_at, nodes.created_at, nodes.halted, nodes.interval_s,
       last.ts, last.temperature, last.humidity, {", ".join("nodes." + c for c in FIRMWARE_COLUMNS)},
       last.vbat, last.rssi, last.awake_ms, nodes.display{extra}
FROM nodes
LEFT JOIN readings AS last ON last.id = (
    SELECT newest.id FROM readings AS newest WHERE newest.node_id = nodes.id ORDER BY newest.ts DESC LIMIT 1
)
WHERE nodes.removed_at IS NULL
ORDER BY nodes.name
"""


LIST_NODES = _list_nodes()
# The same with halt-all beside every row: the swarm's summary (service/swarm.py) in one read.
LIST_NODES_AND_HALT = _list_nodes(f", (SELECT value FROM meta WHERE key = '{HALT_ALL}')")


# A node added again after its removal starts afresh: nothing reported, staged, updated or rolled back.
FIRMWARE_AFRESH = ", ".join(f"{column} = NULL" for column in FIRMWARE_COLUMNS)


def _node_status(row: tuple) -> NodeStatus:
    """A row of :data:`LIST_NODES` as a :class:`NodeStatus`."""
    name, registered_at, created_at, halted, interval_s, *rest, display = row
    return NodeStatus(name, registered_at, created_at, bool(halted), interval_s, *rest[:3], FirmwareState(*rest[3:-3]),
                      *rest[-3:], display=bool(display))


class NodeNames(dict):
    """Node ids to names; an id without a node reads ``#id``."""

    def __missing__(self, node_id: int) -> str:
        return f"#{node_id}"


class RegistryRoom(Connections):
    _registry_cache: Optional[RegistryCache] = None

    def _take_registry_cache(self) -> Optional[RegistryCache]:
        """The process's cache of nodes' records, taken at the first lookup (PostgresStorage); None: none."""
        return None

    def _registry_changed(self) -> None:
        """After a registry change committed: this process's cache forgets now (others on notification)."""
        changed_here(self._url)

    def add_node(self, name: str, password_hash: str) -> None:
        try:
            self._add_node(name, password_hash)
        finally:
            self._registry_changed()

    def _add_node(self, name: str, password_hash: str) -> None:
        now = time.time_ns()
        with self._transaction() as conn:
            row = conn.execute("SELECT removed_at FROM nodes WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if row is None:
                # Two instances adding one name at once: the second waits on the unique index, then does nothing.
                cur = conn.execute(
                    "INSERT INTO nodes (name, password_hash, registered_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, password_hash, now),
                )
                if cur.rowcount == 0:
                    raise NodeExists(name)
            elif row[0] is not None:
                conn.execute(
                    "UPDATE nodes SET password_hash = %s, registered_at = %s, created_at = NULL,"
                    f" removed_at = NULL, halted = false, display = false, {FIRMWARE_AFRESH} WHERE name = %s",
                    (password_hash, now, name),
                )
            else:
                raise NodeExists(name)

    def _update_registered(self, name: str, assignments: str, params: tuple) -> None:
        """``UPDATE nodes SET <assignments>`` of registered node ``name``; :class:`NodeNotFound` if none."""
        try:
            with self._connection() as conn:
                cur = conn.execute(
                    f"UPDATE nodes SET {assignments} WHERE name = %s AND removed_at IS NULL", (*params, name)
                )
        finally:
            self._registry_changed()
        if cur.rowcount == 0:
            raise NodeNotFound(name)

    def set_password(self, name: str, password_hash: str) -> None:
        self._update_registered(name, "password_hash = %s", (password_hash,))

    def remove_node(self, name: str) -> None:
        self._update_registered(name, "password_hash = NULL, removed_at = %s", (time.time_ns(),))

    def set_interval(self, name: str, seconds: int) -> None:
        self._update_registered(name, "interval_s = %s", (int(seconds),))

    def set_display(self, name: str, on: bool) -> None:
        self._update_registered(name, "display = %s", (bool(on),))

    def mark_created(self, name: str, at_ns: int) -> None:
        self._update_registered(name, "created_at = COALESCE(created_at, %s)", (at_ns,))

    def set_halt(self, name: Optional[str], halted: bool) -> None:
        if name is None:
            try:
                with self._connection() as conn:
                    put_meta(conn, HALT_ALL, "1" if halted else "0")
            finally:
                self._registry_changed()
        else:
            self._update_registered(name, "halted = %s", (bool(halted),))

    def halted_all(self) -> bool:
        with self._connection() as conn:
            return get_meta(conn, HALT_ALL) == "1"

    def is_registered(self, name: str) -> bool:
        return self._one("SELECT 1 FROM nodes WHERE name = %s AND removed_at IS NULL", (name,)) is not None

    def ever_registered(self, name: str) -> bool:
        return self._node_id(name) is not None

    def _node_id(self, name: str) -> Optional[int]:
        """The id of node ``name``, registered now or before (None: never)."""
        row = self._one("SELECT id FROM nodes WHERE name = %s", (name,))
        return None if row is None else row[0]

    def node_auth(self, name: str, *, fresh: bool = False) -> Optional[NodeAuth]:
        """The node's record, from the process's cache kept exact by LISTEN/NOTIFY
        (service/storage/postgres/cache.py) or, inside a snapshot, from the snapshot. ``fresh``:
        from the database, and when that differs from the cached record the cache forgets it (its
        notification had not arrived yet)."""
        if self._pinned is not None:
            return self._read_node_auth(name)
        if fresh:
            record = self._read_node_auth(name)
            cache = self._registry_cache
            if cache is not None and cache.cached(name) not in (None, record):
                cache.forget()
            return record
        cache = self._registry_cache or self._take_registry_cache()
        if cache is None:
            return self._read_node_auth(name)
        return cache.lookup(name, self._read_node_auth)

    def _read_node_auth(self, name: str) -> Optional[NodeAuth]:
        row = self._one(
            "SELECT id, password_hash, created_at IS NOT NULL, halted, (SELECT value FROM meta WHERE key = %s),"
            " interval_s, fw_running, fw_staged, fw_rolled_back, display"
            " FROM nodes WHERE name = %s AND removed_at IS NULL",
            (HALT_ALL, name),
        )
        if row is None:
            return None
        node_id, password_hash, created, halted, halt_all, *rest, display = row
        return NodeAuth(node_id, name, password_hash, bool(created), bool(halted) or halt_all == "1", *rest,
                        display=bool(display))

    def list_nodes(self) -> list[NodeStatus]:
        return [_node_status(row) for row in self._all(LIST_NODES)]

    def swarm_nodes(self) -> tuple[bool, list[NodeStatus]]:
        rows = self._all(LIST_NODES_AND_HALT)
        halted_all = bool(rows) and rows[0][-1] == "1"
        return halted_all, [_node_status(row[:-1]) for row in rows]

    def node_names(self) -> dict[int, str]:
        return NodeNames(self._all("SELECT id, name FROM nodes"))
