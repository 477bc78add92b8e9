"""Firmware: bundles kept by version, the one staged for each node, what each node last reported.

As in the SQLite engine (service/storage/sqlite/firmware.py): a bundle and its files go in together,
once; a node's state lives in its ``nodes`` row (the ``fw_*`` columns of schema version 3), so a
stage or a report is a change of that row, which the registry's triggers announce to every
process's cache of nodes' records (service/storage/postgres/cache.py). Staging is one ``UPDATE``
(the rows it locks are the ones it stages; any name missing rolls it back), and a report is one
``UPDATE`` whose ``WHERE`` matches only a row it changes: a node that reports what is stored
already costs no write, and clears no cache.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Optional

import psycopg

from ..interface import FIRMWARE_COLUMNS, BundleFile, FirmwareState, NodeNotFound, StorageError
from .connection import Connections

# One statement, so the bundle and its files are read together: no row at all, no such bundle; a
# row with a NULL name, a bundle without files.
BUNDLE_FILES = (
    "SELECT bundle_files.name, octet_length(bundle_files.content), bundle_files.sha256 FROM bundles"
    " LEFT JOIN bundle_files ON bundle_files.version = bundles.version"
    " WHERE bundles.version = %s ORDER BY bundle_files.name"
)

STAGE = (
    "UPDATE nodes SET fw_staged = %(version)s, fw_staged_at = %(at)s, fw_updated_at = NULL, fw_rolled_back = NULL,"
    " fw_rolled_back_at = NULL WHERE removed_at IS NULL{names} RETURNING name"
)

# Every right-hand side reads the row as it was.
REPORT = """
UPDATE nodes SET
    fw_reported_at = CASE WHEN fw_running IS NOT DISTINCT FROM %(running)s::text THEN fw_reported_at
                          ELSE %(at)s::bigint END,
    fw_running = %(running)s::text,
    fw_updated_at = CASE WHEN fw_updated_at IS NULL AND fw_staged = %(running)s::text THEN %(at)s::bigint
                         ELSE fw_updated_at END,
    fw_rolled_back_at = CASE WHEN %(rolled_back)s::text IS NOT NULL
                                  AND fw_rolled_back IS DISTINCT FROM %(rolled_back)s::text
                             THEN %(at)s::bigint ELSE fw_rolled_back_at END,
    fw_rolled_back = COALESCE(%(rolled_back)s::text, fw_rolled_back)
WHERE name = %(name)s AND removed_at IS NULL AND (
    fw_running IS DISTINCT FROM %(running)s::text
    OR (fw_updated_at IS NULL AND fw_staged = %(running)s::text)
    OR (%(rolled_back)s::text IS NOT NULL AND fw_rolled_back IS DISTINCT FROM %(rolled_back)s::text)
)
"""


class FirmwareRoom(Connections):
    def _registry_changed(self) -> None:  # RegistryRoom's, in PostgresStorage: this process's cache forgets
        pass

    def add_bundle(self, version: str, files: Iterable[tuple[str, bytes]], at_ns: int) -> None:
        rows = [(version, name, hashlib.sha256(content).hexdigest(), bytes(content)) for name, content in files]
        try:
            with self._transaction() as conn:
                # Two processes keeping one version at once: the second waits on the key, then does nothing.
                kept = conn.execute(
                    "INSERT INTO bundles (version, created_at) VALUES (%s, %s) ON CONFLICT (version) DO NOTHING",
                    (version, at_ns),
                )
                if kept.rowcount and rows:
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO bundle_files (version, name, sha256, content) VALUES (%s, %s, %s, %s)", rows
                        )
        except psycopg.errors.UniqueViolation:
            raise StorageError(f"bundle {version} names one file twice") from None

    def bundle_files(self, version: str) -> Optional[list[BundleFile]]:
        rows = self._all(BUNDLE_FILES, (version,))
        if not rows:
            return None
        return [BundleFile(name, size, sha256) for name, size, sha256 in rows if name is not None]

    def bundle_file(self, version: str, name: str) -> Optional[bytes]:
        row = self._one("SELECT content FROM bundle_files WHERE version = %s AND name = %s", (version, name))
        return None if row is None else bytes(row[0])

    def stage_bundle(self, version: Optional[str], names: Optional[Iterable[str]], at_ns: int) -> list[str]:
        wanted = None if names is None else sorted(set(names))
        if wanted == []:
            return []
        params = {"version": version, "at": None if version is None else at_ns, "names": wanted}
        try:
            return self._stage(version, wanted, params)
        finally:
            self._registry_changed()  # this process's cache now; the others' by the nodes trigger

    def _stage(self, version: Optional[str], wanted: Optional[list[str]], params: dict) -> list[str]:
        with self._transaction() as conn:
            if version is not None and conn.execute(
                "SELECT 1 FROM bundles WHERE version = %s", (version,)
            ).fetchone() is None:
                raise StorageError(f"no bundle {version} is kept")
            sql = STAGE.format(names="" if wanted is None else " AND name = ANY(%(names)s)")
            staged = sorted(row[0] for row in conn.execute(sql, params).fetchall())
            if wanted is not None and staged != wanted:
                missing = sorted(set(wanted) - set(staged))
                raise NodeNotFound(missing[0])  # rolls the stage back
        return staged

    def report_firmware(self, name: str, running: str, rolled_back_from: Optional[str], at_ns: int) -> None:
        with self._connection() as conn:
            cur = conn.execute(REPORT, {"name": name, "running": running, "rolled_back": rolled_back_from, "at": at_ns})
        if cur.rowcount:
            self._registry_changed()

    def firmware_state(self, name: str) -> Optional[FirmwareState]:
        row = self._one(
            f"SELECT {', '.join(FIRMWARE_COLUMNS)} FROM nodes WHERE name = %s AND removed_at IS NULL", (name,)
        )
        return None if row is None else FirmwareState(*row)
