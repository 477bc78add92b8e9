"""The registry: nodes, their passwords, halts, intervals and display rights (and, in the same rows,
their firmware state: service/storage/sqlite/firmware.py writes it)."""
from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Optional

from ..interface import FIRMWARE_COLUMNS, HALT_ALL, FirmwareState, NodeAuth, NodeExists, NodeNotFound, NodeStatus
from .meta import get_meta, put_meta
from .schema import REGISTRY_VERSION, snapshot, transaction

if TYPE_CHECKING:
    from pathlib import Path

    from .snapshot import SqliteSnapshot

# Each registered node with its newest reading: one statement. The subquery is one lookup per node
# in readings_node_ts (node_id, ts), which also holds the reading's id; the join fetches that row.
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


class RegistryRoom:
    conn: sqlite3.Connection
    path: Path

    def add_node(self, name: str, password_hash: str) -> None:
        now = time.time_ns()
        with transaction(self.conn):
            row = self.conn.execute("SELECT removed_at FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO nodes (name, password_hash, registered_at) VALUES (?, ?, ?)",
                    (name, password_hash, now),
                )
            elif row[0] is not None:
                self.conn.execute(
                    "UPDATE nodes SET password_hash = ?, registered_at = ?, created_at = NULL,"
                    f" removed_at = NULL, halted = 0, display = 0, {FIRMWARE_AFRESH} WHERE name = ?",
                    (password_hash, now, name),
                )
            else:
                raise NodeExists(name)

    def _update_registered(self, name: str, assignments: str, params: tuple) -> None:
        """``UPDATE nodes SET <assignments>`` of registered node ``name``; :class:`NodeNotFound` if none."""
        cur = self.conn.execute(
            f"UPDATE nodes SET {assignments} WHERE name = ? AND removed_at IS NULL", (*params, name)
        )
        if cur.rowcount == 0:
            raise NodeNotFound(name)

    def set_password(self, name: str, password_hash: str) -> None:
        self._update_registered(name, "password_hash = ?", (password_hash,))

    def remove_node(self, name: str) -> None:
        self._update_registered(name, "password_hash = NULL, removed_at = ?", (time.time_ns(),))

    def set_interval(self, name: str, seconds: int) -> None:
        self._update_registered(name, "interval_s = ?", (int(seconds),))

    def set_display(self, name: str, on: bool) -> None:
        self._update_registered(name, "display = ?", (int(bool(on)),))

    def mark_created(self, name: str, at_ns: int) -> None:
        self._update_registered(name, "created_at = COALESCE(created_at, ?)", (at_ns,))

    def set_halt(self, name: Optional[str], halted: bool) -> None:
        if name is None:
            put_meta(self.conn, HALT_ALL, "1" if halted else "0")
        else:
            self._update_registered(name, "halted = ?", (int(halted),))

    def halted_all(self) -> bool:
        return get_meta(self.conn, HALT_ALL) == "1"

    def is_registered(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM nodes WHERE name = ? AND removed_at IS NULL", (name,)).fetchone() is not None

    def ever_registered(self, name: str) -> bool:
        return self._node_id(name) is not None

    def _node_id(self, name: str) -> Optional[int]:
        """The id of node ``name``, registered now or before (None: never)."""
        row = self.conn.execute("SELECT id FROM nodes WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def node_auth(self, name: str, *, fresh: bool = False) -> Optional[NodeAuth]:
        row = self.conn.execute(  # always fresh: SQLite has no cache to bypass
            "SELECT id, password_hash, created_at IS NOT NULL, halted, (SELECT value FROM meta WHERE key = ?),"
            " interval_s, fw_running, fw_staged, fw_rolled_back, display"
            " FROM nodes WHERE name = ? AND removed_at IS NULL",
            (HALT_ALL, name),
        ).fetchone()
        if row is None:
            return None
        node_id, password_hash, created, halted, halt_all, *rest, display = row
        return NodeAuth(node_id, name, password_hash, bool(created), bool(halted) or halt_all == "1", *rest,
                        display=bool(display))

    def _node_auth_at(self, name: str) -> tuple[Optional[int], Optional[NodeAuth]]:
        """``(registry version, record)``, read in one read transaction: the record as it was at that
        version of the registry (service/storage/sqlite/snapshot.py keeps it only while it is current)."""
        with snapshot(self.conn):
            row = self.conn.execute(REGISTRY_VERSION).fetchone()
            return (None if row is None else row[0]), self.node_auth(name)

    def registry_snapshot(self) -> "SqliteSnapshot":
        from .snapshot import SqliteSnapshot

        return SqliteSnapshot(self.path)

    def list_nodes(self) -> list[NodeStatus]:
        return [_node_status(row) for row in self.conn.execute(LIST_NODES)]

    def swarm_nodes(self) -> tuple[bool, list[NodeStatus]]:
        rows = self.conn.execute(LIST_NODES_AND_HALT).fetchall()
        halted_all = bool(rows) and rows[0][-1] == "1"
        return halted_all, [_node_status(row[:-1]) for row in rows]

    def node_names(self) -> dict[int, str]:
        return NodeNames(self.conn.execute("SELECT id, name FROM nodes"))
