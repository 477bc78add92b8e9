"""The SQLite journal: nodes, halts and every accepted reading, durably.

A 202 is promised from here. :class:`JournalWriter` is the only writer of readings: requests
hand it a reading and wait; it commits everything that waits in one transaction
(group commit, WAL with ``synchronous=FULL``), then wakes them all. Other processes (the
CLI) may change nodes and halts at the same time; the server reads those on every request.

No aiohttp here: the CLI, the server and the exporter all use this module.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

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
    ts          INTEGER NOT NULL,      -- ns since the epoch, server clock, strictly increasing per node
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_node_ts ON readings (node_id, ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class JournalError(Exception):
    """Base of the journal's own errors."""


class NodeExists(JournalError):
    pass


class NodeNotFound(JournalError):
    pass


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


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, ``synchronous`` as asked."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


class Journal:
    """Synchronous access to the journal for one thread: nodes, halts, reads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path)
        self.conn.executescript(SCHEMA)

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

    # -- readings -----------------------------------------------------------------------------

    def count_readings(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]

    def iter_readings(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        batch: int = 5000,
    ) -> Iterator[list[tuple[int, str, float, float]]]:
        """Yield lists of ``(ts_ns, node, temperature, humidity)`` in time order, ``batch`` rows at a time.

        ``start_ns`` is inclusive, ``stop_ns`` exclusive. Memory stays constant whatever the range.
        """
        names = dict(self.conn.execute("SELECT id, name FROM nodes"))
        where, params = ["ts >= ?", "ts < ?"], [start_ns if start_ns is not None else -(2**63), stop_ns if stop_ns is not None else 2**63 - 1]
        if node is not None:
            ids = [i for i, n in names.items() if n == node]
            if not ids:
                return
            where.append("node_id = ?")
            params.append(ids[0])
        cur = self.conn.execute(
            f"SELECT ts, node_id, temperature, humidity FROM readings WHERE {' AND '.join(where)} ORDER BY ts, id",
            params,
        )
        try:
            while rows := cur.fetchmany(batch):
                yield [(ts, names.get(node_id, f"#{node_id}"), t, h) for ts, node_id, t, h in rows]
        finally:
            cur.close()


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
        self._last_ts: dict[int, int] = {}
        self.on_commit = None  # optional callback(batch_size, seconds), for metrics

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
                for item, ts in zip(batch, stamps):
                    if not item.future.done():
                        item.future.set_result(ts)
            if self._closing:
                return

    def _commit(self, batch: list[_Pending]) -> list[int]:
        """Runs in the writer thread: one transaction for the whole batch."""
        conn = self._conn
        now = time.time_ns()
        rows = []
        for item in batch:
            last = self._last_ts.get(item.node_id)
            if last is None:
                last = conn.execute("SELECT MAX(ts) FROM readings WHERE node_id = ?", (item.node_id,)).fetchone()[0] or 0
            ts = now if now > last else last + 1
            self._last_ts[item.node_id] = ts
            rows.append((item.node_id, ts, item.temperature, item.humidity))
        created = [(now, item.node_id) for item in batch if item.create]
        with _transaction(conn):
            conn.executemany("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)", rows)
            if created:
                conn.executemany("UPDATE nodes SET created_at = ? WHERE id = ? AND created_at IS NULL", created)
        return [row[1] for row in rows]
