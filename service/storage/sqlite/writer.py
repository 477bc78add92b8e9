"""The readings writer: group commit and timestamps. A 202 is promised from here.

:class:`SqliteWriter` is the only writer of the service's readings: requests hand it a reading and
wait; it commits everything that waits in one transaction (WAL with ``synchronous=FULL``), then wakes
them all. Other processes (the CLI, sibling workers) may write at the same time; the timestamps stay
unique because the newest one is read under the write lock.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..interface import PRUNED_BEFORE, NodeNotFound, StorageUnavailable, Writer
from .schema import connect, transaction

INSERT_READING = "INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)"


def newest_stamp(conn: sqlite3.Connection) -> int:
    """The newest timestamp ever handed out: the newest reading's, or (an emptied journal) the newest
    pruned one's, so no time InfluxDB already has comes again. readings_ts makes it one index lookup."""
    return conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(ts) FROM readings), 0),"
        " COALESCE((SELECT CAST(value AS INTEGER) - 1 FROM meta WHERE key = ?), 0))",
        (PRUNED_BEFORE,),
    ).fetchone()[0]


@dataclass
class _Pending:
    node_id: int
    temperature: float
    humidity: float
    create: bool
    future: asyncio.Future


class SqliteWriter(Writer):
    """Group commit: one writer thread, many waiting requests per transaction."""

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
        self.on_commit = None
        self.commit_listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, lambda: connect(self.path, synchronous=self.synchronous))
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    async def close(self) -> None:
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
            raise StorageUnavailable("the service is shutting down")
        if len(self._pending) >= self.max_queue:
            raise StorageUnavailable("the journal is overloaded")
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
                    error = StorageUnavailable(f"{type(exc).__name__}: {exc}")
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
        with transaction(conn):
            # Timestamps are unique across all nodes, not only per node (InfluxDB would overwrite a
            # node's reading that shares one), and strictly increasing in commit order, even if the
            # clock steps back. The newest one is read under the write lock (BEGIN IMMEDIATE), so
            # several writer processes (`tswarm serve --workers N`) take turns and never repeat one.
            last = newest_stamp(conn)
            now = time.time_ns()
            rows = []
            for item in batch:
                last = now if now > last else last + 1
                rows.append((item.node_id, last, item.temperature, item.humidity))
            created = [(now, item.node_id) for item in batch if item.create]
            conn.executemany(INSERT_READING, rows)
            if created:
                conn.executemany("UPDATE nodes SET created_at = ? WHERE id = ? AND created_at IS NULL", created)
        return [row[1] for row in rows]


class WriterRoom:
    conn: sqlite3.Connection
    path: Path

    def writer(self, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000) -> SqliteWriter:
        return SqliteWriter(self.path, synchronous=synchronous, max_batch=max_batch, max_queue=max_queue)

    def add_readings(self, rows: Iterable[tuple[str, int, float, float]]) -> None:
        with transaction(self.conn):
            ids = {name: id_ for id_, name in self.conn.execute("SELECT id, name FROM nodes")}
            try:
                self.conn.executemany(INSERT_READING, ((ids[node], ts, t, h) for node, ts, t, h in rows))
            except KeyError as exc:
                raise NodeNotFound(exc.args[0]) from None
