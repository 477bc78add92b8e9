"""Firmware: bundles kept by version, the one staged for each node, what each node last reported.

A bundle and its files go in together, once (a version is the hash of its files: one kept already
is left as it is). A node's state lives in its ``nodes`` row (the ``fw_*`` columns of schema
version 2), so :meth:`node_auth` and :meth:`list_nodes` read it with the rest of the node.
:meth:`FirmwareRoom.report_firmware` is one ``UPDATE`` whose ``WHERE`` matches only a row it
changes: a node that reports what is stored already costs no write.
"""
from __future__ import annotations

import hashlib
import sqlite3
from typing import Iterable, Optional

from ..interface import FIRMWARE_COLUMNS, BundleFile, FirmwareState, NodeNotFound, StorageError
from .schema import transaction

# One statement, so the bundle and its files are read together: no row at all, no such bundle; a
# row with a NULL name, a bundle without files.
BUNDLE_FILES = (
    "SELECT bundle_files.name, length(bundle_files.content), bundle_files.sha256 FROM bundles"
    " LEFT JOIN bundle_files ON bundle_files.version = bundles.version"
    " WHERE bundles.version = ? ORDER BY bundle_files.name"
)

STAGE = (
    "UPDATE nodes SET fw_staged = ?, fw_staged_at = ?, fw_updated_at = NULL, fw_rolled_back = NULL,"
    " fw_rolled_back_at = NULL WHERE name = ? AND removed_at IS NULL"
)

# Every right-hand side reads the row as it was. ``IS`` / ``IS NOT`` compare NULLs as values.
REPORT = """
UPDATE nodes SET
    fw_reported_at = CASE WHEN fw_running IS :running THEN fw_reported_at ELSE :at END,
    fw_running = :running,
    fw_updated_at = CASE WHEN fw_updated_at IS NULL AND fw_staged = :running THEN :at ELSE fw_updated_at END,
    fw_rolled_back_at = CASE WHEN :rolled_back IS NOT NULL AND fw_rolled_back IS NOT :rolled_back
                             THEN :at ELSE fw_rolled_back_at END,
    fw_rolled_back = COALESCE(:rolled_back, fw_rolled_back)
WHERE name = :name AND removed_at IS NULL AND (
    fw_running IS NOT :running
    OR (fw_updated_at IS NULL AND fw_staged = :running)
    OR (:rolled_back IS NOT NULL AND fw_rolled_back IS NOT :rolled_back)
)
"""


class FirmwareRoom:
    conn: sqlite3.Connection

    def add_bundle(self, version: str, files: Iterable[tuple[str, bytes]], at_ns: int) -> None:
        rows = [(version, name, hashlib.sha256(content).hexdigest(), bytes(content)) for name, content in files]
        with transaction(self.conn):
            kept = self.conn.execute("INSERT OR IGNORE INTO bundles (version, created_at) VALUES (?, ?)", (version, at_ns))
            if kept.rowcount:
                try:
                    self.conn.executemany(
                        "INSERT INTO bundle_files (version, name, sha256, content) VALUES (?, ?, ?, ?)", rows
                    )
                except sqlite3.IntegrityError:
                    raise StorageError(f"bundle {version} names one file twice") from None

    def bundle_files(self, version: str) -> Optional[list[BundleFile]]:
        rows = self.conn.execute(BUNDLE_FILES, (version,)).fetchall()
        if not rows:
            return None
        return [BundleFile(name, size, sha256) for name, size, sha256 in rows if name is not None]

    def bundle_file(self, version: str, name: str) -> Optional[bytes]:
        row = self.conn.execute(
            "SELECT content FROM bundle_files WHERE version = ? AND name = ?", (version, name)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def stage_bundle(self, version: Optional[str], names: Optional[Iterable[str]], at_ns: int) -> list[str]:
        with transaction(self.conn):
            if version is not None and self.conn.execute(
                "SELECT 1 FROM bundles WHERE version = ?", (version,)
            ).fetchone() is None:
                raise StorageError(f"no bundle {version} is kept")
            registered = {row[0] for row in self.conn.execute("SELECT name FROM nodes WHERE removed_at IS NULL")}
            if names is None:
                staged = sorted(registered)
            else:
                staged = sorted(set(names))
                missing = [name for name in staged if name not in registered]
                if missing:
                    raise NodeNotFound(missing[0])
            at = None if version is None else at_ns
            self.conn.executemany(STAGE, ((version, at, name) for name in staged))
        return staged

    def report_firmware(self, name: str, running: str, rolled_back_from: Optional[str], at_ns: int) -> None:
        self.conn.execute(REPORT, {"name": name, "running": running, "rolled_back": rolled_back_from, "at": at_ns})

    def firmware_state(self, name: str) -> Optional[FirmwareState]:
        row = self.conn.execute(
            f"SELECT {', '.join(FIRMWARE_COLUMNS)} FROM nodes WHERE name = ? AND removed_at IS NULL", (name,)
        ).fetchone()
        return None if row is None else FirmwareState(*row)
