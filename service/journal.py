"""The SQLite journal: nodes, halts and every accepted reading, durably.

A 202 is promised from here. :class:`JournalWriter` is the only writer of readings: requests
hand it a reading and wait; it commits everything that waits in one transaction
(group commit, WAL with ``synchronous=FULL``), then wakes them all. Other processes (the
CLI) may change nodes and halts at the same time; the server reads those on every request.

No aiohttp here: the CLI, the server and the exporter all use this module.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

DB_FILENAME = "tswarm.db"
BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,              -- 'scrypt$n$r$p$salt$hash'; NULL once removed
    registered_at INTEGER NOT NULL,  -- ns since the epoch
    created_at    INTEGER,           -- first POST; NULL: a PUT is answered 405
    removed_at    INTEGER,
    halted        INTEGER NOT NULL DEFAULT 0,
    interval_s    INTEGER NOT NULL DEFAULT 300
);
CREATE TABLE IF NOT EXISTS readings (
    id          INTEGER PRIMARY KEY,   -- commit order: the forwarder's cursor
    node_id     INTEGER NOT NULL,
    ts          INTEGER NOT NULL,      -- ns since the epoch, server clock, strictly increasing (unique across nodes)
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_node_ts ON readings (node_id, ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (    -- readings InfluxDB refused for good (a 400): kept, not retried
    reading_id  INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at INTEGER NOT NULL
);
"""


class JournalError(Exception):
    """Base of the journal's own errors."""


class NodeExists(JournalError):
    pass


class NodeNotFound(JournalError):
    pass


class JournalUnusable(JournalError):
    """The data dir or its journal cannot be used at all (a file where the folder should be, no write
    permission, a ``tswarm.db`` that is not SQLite). The message names the path; the CLI prints it as is."""


class JournalUnavailable(JournalError):
    """The journal cannot take a reading now (disk full, I/O error, overloaded). Nothing was stored."""


@dataclass(frozen=True)
class NodeAuth:
    """What a request needs to know about its node, read fresh on every request."""

    id: int
    name: str
    password_hash: str
    created: bool
    halted: bool  # this node, or all nodes


@dataclass(frozen=True)
class NodeStatus:
    name: str
    registered_at: int
    created_at: Optional[int]
    halted: bool
    interval_s: int
    last_ts: Optional[int]
    last_temperature: Optional[float]
    last_humidity: Optional[float]


class Reading(NamedTuple):
    """One reading as the forwarder sends it: ``id`` is its place in commit order."""

    id: int
    node: str
    ts: int
    temperature: float
    humidity: float


FORWARD_CURSOR = "forward_cursor"          # meta: id of the last reading InfluxDB acknowledged
FORWARD_LAST_ERROR = "forward_last_error"  # meta: JSON {"at": ns, "message": ...} while writes fail
PRUNED_BEFORE = "pruned_before"  # meta: ns; below it the journal is no longer complete (see prune_readings)


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, ``synchronous`` as asked."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")  # the first read of the file: "file is not a database" is here
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def check_data_dir(data_dir: Path | str, create: bool = True) -> Path:
    """``data_dir`` as a folder this process may write in (created, with its parents, if ``create``);
    :class:`JournalUnusable` otherwise."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise JournalUnusable(f"data dir {data_dir} is a file, not a folder (check --data-dir or TSWARM_DATA_DIR)")
    blocker = next((p for p in data_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise JournalUnusable(f"data dir {data_dir} cannot be created: {blocker} is a file, not a folder")
    if create:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalUnusable(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    if data_dir.is_dir() and not os.access(data_dir, os.W_OK | os.X_OK):
        raise JournalUnusable(f"data dir {data_dir} is not writable by this user (the journal writes beside tswarm.db)")
    return data_dir


def _unusable(path: Path, exc: sqlite3.Error) -> JournalUnusable:
    if path.is_dir():
        return JournalUnusable(f"journal {path} is a folder, not a file; move it away")
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return JournalUnusable(
            f"journal {path} is not a tswarm journal ({exc}); move it away (or give another --data-dir / TSWARM_DATA_DIR)"
        )
    return JournalUnusable(f"cannot open journal {path}: {exc}")


class Journal:
    """Synchronous access to the journal for one thread: nodes, halts, reads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        check_data_dir(self.path.parent)
        try:
            self.conn = connect(self.path)
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from None
        try:
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            self.conn.close()
            raise _unusable(self.path, exc) from None

    @classmethod
    def open(cls, data_dir: Path | str) -> "Journal":
        return cls(Path(data_dir) / DB_FILENAME)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- nodes ------------------------------------------------------------------------------

    def add_node(self, name: str, password_hash: str) -> None:
        """Register a node's credentials. A removed node's name may be added again."""
        now = time.time_ns()
        with _transaction(self.conn):
            row = self.conn.execute("SELECT removed_at FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO nodes (name, password_hash, registered_at) VALUES (?, ?, ?)",
                    (name, password_hash, now),
                )
            elif row[0] is not None:
                self.conn.execute(
                    "UPDATE nodes SET password_hash = ?, registered_at = ?, created_at = NULL,"
                    " removed_at = NULL, halted = 0 WHERE name = ?",
                    (password_hash, now, name),
                )
            else:
                raise NodeExists(name)

    def set_password(self, name: str, password_hash: str) -> None:
        cur = self.conn.execute(
            "UPDATE nodes SET password_hash = ? WHERE name = ? AND removed_at IS NULL", (password_hash, name)
        )
        if cur.rowcount == 0:
            raise NodeNotFound(name)

    def remove_node(self, name: str) -> None:
        """Revoke a node's credentials and hide it; its readings stay in the history."""
        cur = self.conn.execute(
            "UPDATE nodes SET password_hash = NULL, removed_at = ? WHERE name = ? AND removed_at IS NULL",
            (time.time_ns(), name),
        )
        if cur.rowcount == 0:
            raise NodeNotFound(name)

    def node_exists(self, name: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM nodes WHERE name = ? AND removed_at IS NULL", (name,)).fetchone()
        return row is not None

    def node_auth(self, name: str) -> Optional[NodeAuth]:
        row = self.conn.execute(
            "SELECT id, password_hash, created_at IS NOT NULL, halted,"
            " (SELECT value FROM meta WHERE key = 'halt_all')"
            " FROM nodes WHERE name = ? AND removed_at IS NULL",
            (name,),
        ).fetchone()
        if row is None:
            return None
        node_id, password_hash, created, halted, halt_all = row
        return NodeAuth(node_id, name, password_hash, bool(created), bool(halted) or halt_all == "1")

    def set_halt(self, name: Optional[str], halted: bool) -> None:
        """Halt or resume one node, or (``name=None``) all of them."""
        if name is None:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('halt_all', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("1" if halted else "0",),
            )
            return
        cur = self.conn.execute(
            "UPDATE nodes SET halted = ? WHERE name = ? AND removed_at IS NULL", (int(halted), name)
        )
        if cur.rowcount == 0:
            raise NodeNotFound(name)

    def halted_all(self) -> bool:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'halt_all'").fetchone()
        return row is not None and row[0] == "1"

    def list_nodes(self) -> list[NodeStatus]:
        nodes = self.conn.execute(
            "SELECT id, name, registered_at, created_at, halted, interval_s FROM nodes"
            " WHERE removed_at IS NULL ORDER BY name"
        ).fetchall()
        result = []
        for node_id, name, registered_at, created_at, halted, interval_s in nodes:
            last = self.conn.execute(
                "SELECT ts, temperature, humidity FROM readings WHERE node_id = ? ORDER BY ts DESC LIMIT 1",
                (node_id,),
            ).fetchone() or (None, None, None)
            result.append(NodeStatus(name, registered_at, created_at, bool(halted), interval_s, *last))
        return result

    # -- forwarding (store=influxdb) --------------------------------------------------------------

    def meta(self, key: str) -> Optional[str]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: Optional[str]) -> None:
        """Set ``key``, or delete it when ``value`` is None."""
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def forward_cursor(self) -> int:
        """Id of the last reading InfluxDB acknowledged (0: none yet, so everything waits)."""
        return int(self.meta(FORWARD_CURSOR) or 0)

    def readings_after(
        self, after_id: int, limit: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None
    ) -> list[Reading]:
        """Up to ``limit`` readings with ``id > after_id`` in commit order (so in time order per node),
        optionally only those with ``start_ns <= ts < stop_ns``."""
        rows = self.rows_after(after_id, limit, start_ns, stop_ns)
        names = self.node_names()
        return [Reading(id_, names[node_id], ts, t, h) for id_, node_id, ts, t, h in rows]

    def rows_after(
        self, after_id: int, limit: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None
    ) -> list[tuple[int, int, int, float, float]]:
        """What :meth:`readings_after` returns, as the journal holds it: ``(id, node_id, ts, temperature,
        humidity)``, node ids in place of names (see :meth:`node_names`). The forwarder's fast path:
        no name string and no object per reading."""
        sql = "SELECT id, node_id, ts, temperature, humidity FROM readings WHERE id > ?"
        params: list = [after_id]
        if start_ns is not None:
            sql += " AND ts >= ?"
            params.append(start_ns)
        if stop_ns is not None:
            sql += " AND ts < ?"
            params.append(stop_ns)
        return self.conn.execute(sql + " ORDER BY id LIMIT ?", params + [limit]).fetchall()

    def node_names(self) -> dict[int, str]:
        """Every node's id and name, removed nodes too (a node's id keeps its name for good). An id
        with no node row reads ``#id``, as in :meth:`iter_readings`."""
        return _NodeNames(self.conn.execute("SELECT id, name FROM nodes"))

    def last_reading_id(self) -> int:
        """The newest reading's id (0 when empty). Ids grow by one per reading and only readings
        already forwarded are ever deleted, so ``last_reading_id() - cursor`` is the backlog, in O(1)."""
        return self.conn.execute("SELECT MAX(id) FROM readings").fetchone()[0] or 0

    def count_readings_after(
        self, after_id: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None
    ) -> int:
        """How many readings :meth:`readings_after` would go through (the backlog, or a backfill's total)."""
        sql, params = "SELECT COUNT(*) FROM readings WHERE id > ?", [after_id]
        if start_ns is not None:
            sql += " AND ts >= ?"
            params.append(start_ns)
        if stop_ns is not None:
            sql += " AND ts < ?"
            params.append(stop_ns)
        return self.conn.execute(sql, params).fetchone()[0]

    def first_id_from(self, start_ns: int) -> int:
        """An id to resume after so that no reading with ``ts >= start_ns`` is skipped (for backfills)."""
        row = self.conn.execute("SELECT MIN(id) FROM readings WHERE ts >= ?", (start_ns,)).fetchone()
        return (row[0] - 1) if row[0] is not None else self.conn.execute(
            "SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0]

    def oldest_unforwarded_ts(self) -> Optional[int]:
        row = self.conn.execute(
            "SELECT ts FROM readings WHERE id > ? ORDER BY id LIMIT 1", (self.forward_cursor(),)
        ).fetchone()
        return None if row is None else row[0]

    def mark_forwarded(self, last_id: int, rejected: list[tuple[Reading, str]] = ()) -> None:
        """InfluxDB acknowledged every reading up to ``last_id``, except ``rejected`` (reading, reason):
        move the cursor (never backwards) and keep the rejected ones, in one transaction."""
        now = time.time_ns()
        with _transaction(self.conn):
            self.conn.executemany(
                "INSERT OR REPLACE INTO rejected (reading_id, node, ts, temperature, humidity, reason, rejected_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.node, r.ts, r.temperature, r.humidity, reason, now) for r, reason in rejected],
            )
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (FORWARD_CURSOR, str(last_id)),
            )

    def record_rejected(self, rejected: list[tuple[Reading, str]]) -> None:
        """Keep readings InfluxDB refused during a backfill (the cursor is not the backfill's)."""
        with _transaction(self.conn):
            self.conn.executemany(
                "INSERT OR REPLACE INTO rejected (reading_id, node, ts, temperature, humidity, reason, rejected_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.node, r.ts, r.temperature, r.humidity, reason, time.time_ns()) for r, reason in rejected],
            )

    def count_rejected(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]

    def rejected_readings(self, limit: int = 100) -> list[tuple[Reading, str, int]]:
        """The newest rejected readings: ``(reading, reason, rejected_at)``."""
        rows = self.conn.execute(
            "SELECT reading_id, node, ts, temperature, humidity, reason, rejected_at FROM rejected"
            " ORDER BY rejected_at DESC, reading_id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(Reading(*row[:5]), row[5], row[6]) for row in rows]

    def prune_readings(self, before_ns: int, up_to_id: Optional[int] = None, chunk: int = 10_000) -> int:
        """Delete readings older than ``before_ns`` (and, when given, with ``id <= up_to_id``: forwarded).

        Deletes ``chunk`` rows per transaction so the writer never waits long, and moves the horizon
        (meta ``pruned_before``, see :meth:`pruned_before`) past the newest reading deleted, in the
        same transaction. Returns how many went.
        """
        limit_id = up_to_id if up_to_id is not None else 2**63 - 1
        total = 0
        while True:
            with _transaction(self.conn):
                newest = self.conn.execute(
                    "SELECT MAX(ts) FROM (SELECT ts FROM readings WHERE ts < ? AND id <= ? ORDER BY ts LIMIT ?)",
                    (before_ns, limit_id, chunk),
                ).fetchone()[0]
                cur = self.conn.execute(
                    "DELETE FROM readings WHERE id IN"
                    " (SELECT id FROM readings WHERE ts < ? AND id <= ? ORDER BY ts LIMIT ?)",
                    (before_ns, limit_id, chunk),
                )
                if newest is not None:  # the horizon, in the same transaction as the deletion
                    self.conn.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                        " SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                        (PRUNED_BEFORE, str(newest + 1)),
                    )
            total += cur.rowcount
            if cur.rowcount < chunk:
                return total

    def pruned_before(self) -> Optional[int]:
        """The horizon: every reading with ``ts >= pruned_before()`` is still here; below it, pruning
        deleted readings (with ``store=influxdb``, forwarded ones: InfluxDB has them). None: nothing
        was ever pruned, the journal is complete."""
        value = self.meta(PRUNED_BEFORE)
        return None if value is None else int(value)

    def iter_kept_below(
        self, before_ns: int, node: Optional[str] = None, start_ns: Optional[int] = None
    ) -> Iterator[tuple]:
        """What the journal still holds below the horizon ``before_ns``, ordered by ``(ts, node)``:
        readings pruning had to keep (not yet forwarded) and readings InfluxDB refused for good,
        as ``(ts_ns, node, temperature, humidity)``, each once."""
        lowest = start_ns if start_ns is not None else -(2**63)
        sql = (
            "SELECT ts, node, temperature, humidity FROM ("
            " SELECT ts, nodes.name AS node, temperature, humidity FROM readings"
            " JOIN nodes ON nodes.id = readings.node_id WHERE ts >= ? AND ts < ?"
            " UNION SELECT ts, node, temperature, humidity FROM rejected WHERE ts >= ? AND ts < ?)"
        )
        params: list = [lowest, before_ns, lowest, before_ns]
        if node is not None:
            sql += " WHERE node = ?"
            params.append(node)
        cur = self.conn.execute(sql + " ORDER BY ts, node", params)
        try:
            yield from cur
        finally:
            cur.close()

    # -- readings -----------------------------------------------------------------------------

    def count_readings(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]

    def iter_readings(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        batch: int = 5000,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: Optional[int] = None,
        with_id: bool = False,
    ) -> Iterator[list[tuple]]:
        """Yield lists of ``(ts_ns, node, temperature, humidity)`` in time order, ``batch`` rows at a time.

        ``start_ns`` is inclusive, ``stop_ns`` exclusive. ``after=(ts, id)`` resumes strictly after
        that row of the order ``(ts, id)``; ``limit`` stops after that many rows; ``with_id`` appends
        each row's id (a fifth item), which is what a resume point is made of. Memory stays constant
        whatever the range.
        """
        query = self._readings_query(node, start_ns, stop_ns, after)
        if query is None:
            return
        where, params = query
        # SQLite joins the node names in (an index lookup in C): rows come out ready to use.
        sql = (
            "SELECT readings.ts, COALESCE(nodes.name, '#' || readings.node_id), temperature, humidity"
            + (", readings.id" if with_id else "")
            + f" FROM readings LEFT JOIN nodes ON nodes.id = readings.node_id WHERE {where}"
            " ORDER BY readings.ts, readings.id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        cur = self.conn.execute(sql, params)
        try:
            while rows := cur.fetchmany(batch):
                yield rows
        finally:
            cur.close()

    def count_readings_in(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
    ) -> int:
        """How many rows :meth:`iter_readings` would yield with the same filters (for progress bars)."""
        query = self._readings_query(node, start_ns, stop_ns, after)
        if query is None:
            return 0
        where, params = query
        return self.conn.execute(f"SELECT COUNT(*) FROM readings WHERE {where}", params).fetchone()[0]

    def page_end(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: int,
    ) -> Optional[tuple[int, int]]:
        """``(ts, id)`` of the last row of a page of ``limit`` rows when more rows follow it, else None.

        Asked before the page is streamed, inside the same read transaction (see :meth:`snapshot`),
        so a reader learns where to resume before the first byte.
        """
        query = self._readings_query(node, start_ns, stop_ns, after)
        if query is None:
            return None
        where, params = query
        rows = self.conn.execute(
            f"SELECT ts, id FROM readings WHERE {where} ORDER BY ts, id LIMIT 2 OFFSET ?", params + [limit - 1]
        ).fetchall()
        return tuple(rows[0]) if len(rows) == 2 else None

    def snapshot(self) -> "_snapshot":
        """``with journal.snapshot():`` every read inside sees the journal as of its first read."""
        return _snapshot(self.conn)

    def _readings_query(self, node, start_ns, stop_ns, after) -> Optional[tuple[str, list]]:
        """The WHERE clause shared by the readers, or None when ``node`` never existed."""
        where = ["readings.ts >= ?", "readings.ts < ?"]
        params: list = [
            start_ns if start_ns is not None else -(2**63),
            stop_ns if stop_ns is not None else 2**63 - 1,
        ]
        if after is not None:
            where.append("readings.ts >= ? AND (readings.ts > ? OR readings.id > ?)")
            params += [after[0], after[0], after[1]]
        if node is not None:
            row = self.conn.execute("SELECT id FROM nodes WHERE name = ?", (node,)).fetchone()
            if row is None:
                return None
            where.append("readings.node_id = ?")
            params.append(row[0])
        return " AND ".join(where), params

    def known_node(self, name: str) -> bool:
        """A node registered now or before (a removed node's readings stay in the history)."""
        return self.conn.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone() is not None

    def readings_since(self, since_ns: int) -> dict[str, int]:
        """How many readings each node sent from ``since_ns`` on (nodes without any are absent)."""
        return dict(self.conn.execute(
            "SELECT nodes.name, COUNT(*) FROM readings JOIN nodes ON nodes.id = readings.node_id"
            " WHERE readings.ts >= ? GROUP BY readings.node_id",
            (since_ns,),
        ))

    def set_interval(self, name: str, seconds: int) -> None:
        """How often node ``name`` is expected to wake (seconds); its health is judged against it."""
        cur = self.conn.execute(
            "UPDATE nodes SET interval_s = ? WHERE name = ? AND removed_at IS NULL", (int(seconds), name)
        )
        if cur.rowcount == 0:
            raise NodeNotFound(name)


class _NodeNames(dict):
    def __missing__(self, node_id: int) -> str:
        return f"#{node_id}"


class _snapshot:
    """``BEGIN`` ... ``COMMIT`` around reads: one consistent view of the journal (WAL keeps writers going)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN")

    def __exit__(self, *exc):
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            pass


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


@dataclass
class _Pending:
    node_id: int
    temperature: float
    humidity: float
    create: bool
    future: asyncio.Future


class JournalWriter:
    """Group commit: one writer thread, many waiting requests per transaction.

    ``await writer.append(...)`` returns the reading's timestamp once its transaction is
    committed and synced, or raises :class:`JournalUnavailable` when nothing was stored.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000):
        self.path = Path(path)
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self._conn: Optional[sqlite3.Connection] = None
        self.on_commit = None  # optional callback(batch_size, seconds), for metrics
        self.commit_listeners: list[Callable[[], None]] = []  # called after every commit (the forwarder's wake-up)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, lambda: connect(self.path, synchronous=self.synchronous))
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    async def close(self) -> None:
        """Commit what waits, then stop. Calling it again does nothing."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def append(self, node_id: int, temperature: float, humidity: float, *, create: bool = False) -> int:
        if self._closing:
            raise JournalUnavailable("the service is shutting down")
        if len(self._pending) >= self.max_queue:
            raise JournalUnavailable("the journal is overloaded")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(node_id, temperature, humidity, create, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                started = time.perf_counter()
                try:
                    stamps = await loop.run_in_executor(self._executor, self._commit, batch)
                except Exception as exc:  # disk full, I/O error: nothing of this batch was stored
                    error = JournalUnavailable(f"{type(exc).__name__}: {exc}")
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(error)
                    continue
                if self.on_commit is not None:
                    self.on_commit(len(batch), time.perf_counter() - started)
                for listener in self.commit_listeners:
                    listener()
                for item, ts in zip(batch, stamps):
                    if not item.future.done():
                        item.future.set_result(ts)
            if self._closing:
                return

    def _commit(self, batch: list[_Pending]) -> list[int]:
        """Runs in the writer thread: one transaction for the whole batch."""
        conn = self._conn
        with _transaction(conn):
            # Timestamps are unique across all nodes, not only per node (InfluxDB would overwrite a
            # node's reading that shares one), and strictly increasing in commit order, even if the
            # clock steps back. The newest one is read under the write lock (BEGIN IMMEDIATE), so
            # several writer processes (`tswarm serve --workers N`) take turns and never repeat one;
            # readings_ts makes this MAX one index lookup. Pruned readings count too (the horizon
            # is past the newest pruned one): an emptied journal never reuses a time InfluxDB has.
            last = conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(ts) FROM readings), 0),"
                " COALESCE((SELECT CAST(value AS INTEGER) - 1 FROM meta WHERE key = ?), 0))",
                (PRUNED_BEFORE,),
            ).fetchone()[0]
            now = time.time_ns()
            rows = []
            for item in batch:
                last = now if now > last else last + 1
                rows.append((item.node_id, last, item.temperature, item.humidity))
            created = [(now, item.node_id) for item in batch if item.create]
            conn.executemany("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)", rows)
            if created:
                conn.executemany("UPDATE nodes SET created_at = ? WHERE id = ? AND created_at IS NULL", created)
        return [row[1] for row in rows]
