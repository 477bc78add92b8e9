"""The readings writer: group commit and timestamps. A 202 is promised from here.

:class:`SqliteWriter` is the only writer of the service's readings: requests hand it a reading and
wait; it commits everything that waits in one transaction (WAL with ``synchronous=FULL``), then wakes
them all. Other processes (the CLI, sibling workers) may write at the same time; the timestamps stay
unique because the newest one is read under the write lock.

The writers of sibling workers (``tswarm serve --workers N``) queue for SQLite's write lock at a
:class:`WriterLock` first: ``flock`` on ``<journal>-writer.lock`` beside the journal, taken in the
writer thread around ``BEGIN IMMEDIATE`` ... ``COMMIT``. SQLite's own busy handler, which is what a
writer meeting a locked journal would otherwise wait in, polls by sleeping (1, 2, 5, 10 ... ms): a
worker whose sibling committed wakes up to several milliseconds late, while its requests pile up,
and the sibling often takes the lock again meanwhile, so commits overlap in waiting and the groups
shrink. A blocked ``flock`` wakes the moment the lock is let go (and releases the GIL while it
waits), so the workers take turns without a gap and each finds the group its siblings' commit
left it. The lock only orders the service's own writers: SQLite's write lock is still what makes the
timestamps safe, and the other writers (the CLI, the admin API, the forwarder's cursor) take only
that one, with its busy timeout, as before. A worker that dies holding the lock loses it with its
last open file (the kernel's doing); one that waits longer than the busy timeout (a sibling stopped
mid-commit) gives up with SQLite's own error, as a busy journal always did (a 503).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Iterable, Optional

from ..group import GroupCommitWriter, Pending, stamp_batch
from ..interface import FORWARD_CURSOR, NO_EXTRA, PRUNED_BEFORE, NodeNotFound
from .schema import BUSY_TIMEOUT_MS, connect, transaction

INSERT_READING = (
    "INSERT INTO readings (id, node_id, ts, temperature, humidity, vbat, rssi, awake_ms, lost, boot, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
STORED_KEY = "SELECT ts FROM readings WHERE node_id = ? AND boot = ? AND seq = ?"  # readings_node_key
TAKEN = "SELECT 1 FROM readings WHERE ts = ? LIMIT 1"  # readings_ts


def newest_stamp(conn: sqlite3.Connection) -> int:
    """The newest timestamp ever handed out: the newest reading's, or (an emptied journal) the newest
    pruned one's, so no time InfluxDB already has comes again. readings_ts makes it one index lookup."""
    return conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(ts) FROM readings), 0),"
        " COALESCE((SELECT CAST(value AS INTEGER) - 1 FROM meta WHERE key = ?), 0))",
        (PRUNED_BEFORE,),
    ).fetchone()[0]


def newest_id(conn: sqlite3.Connection) -> int:
    """The id after which the next reading goes: the newest reading's, and never below the forward
    cursor. SQLite hands out MAX(rowid) + 1, so once retention has pruned every forwarded reading it
    would start again at 1, below the cursor, and the forwarder would never see those readings."""
    return conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM readings), 0),"
        " COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0))",
        (FORWARD_CURSOR,),
    ).fetchone()[0]


def writer_lock_path(journal: Path) -> Path:
    """The file the service's writers queue on: ``tswarm.db-writer.lock`` beside ``tswarm.db``."""
    return journal.with_name(journal.name + "-writer.lock")


class WriterLock:
    """The service writers' queue in front of SQLite's write lock: an exclusive ``flock`` on a file of
    its own open (one per writer: ``flock`` belongs to the open file, so each writer opens it after the
    fork). Its methods run in the writer thread.

    :meth:`acquire` takes it at once when it is free (one system call); otherwise a helper thread
    blocks in ``flock`` and the writer waits for it at most ``timeout_s``. A wait that timed out leaves
    that ``flock`` pending, and whoever of it and the next :meth:`acquire` gets the lock may find the
    other let it go: harmless, since the lock only orders the writers and SQLite's ``BEGIN IMMEDIATE``
    still serializes the commits themselves."""

    def __init__(self, path: Path, *, timeout_s: float = BUSY_TIMEOUT_MS / 1000):
        self.path = path
        self.timeout_s = timeout_s
        self._fd: Optional[int] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._waiter: Optional[ThreadPoolExecutor] = None

    def acquire(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if self._waiter is None:
            self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer-lock")
        waiting = self._waiter.submit(fcntl.flock, self._fd, fcntl.LOCK_EX)
        try:
            waiting.result(self.timeout_s)
        except FutureTimeout:
            waiting.add_done_callback(self._let_go)
            raise sqlite3.OperationalError(
                f"database is locked (another worker held {self.path.name} for over {self.timeout_s:g} s)"
            ) from None

    def _let_go(self, waited) -> None:
        """A ``flock`` nobody waits for any more got the lock: let it go for the siblings."""
        if not waited.cancelled() and waited.exception() is None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.shutdown(wait=False, cancel_futures=True)
        if self._fd is not None:
            os.close(self._fd)  # lets the lock go too
            self._fd = None

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class SqliteWriter(GroupCommitWriter):
    """Group commit on a connection of its own (WAL, ``synchronous`` as asked: FULL syncs before the 202)."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000):
        super().__init__(max_batch=max_batch, max_queue=max_queue)
        self.path = Path(path)
        self.synchronous = synchronous
        self._lock: Optional[WriterLock] = None

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path, synchronous=self.synchronous)
        try:
            self._lock = WriterLock(writer_lock_path(self.path))
        except OSError as exc:
            conn.close()
            raise sqlite3.OperationalError(f"cannot open {writer_lock_path(self.path)}: {exc.strerror or exc}") from None
        return conn

    def _disconnect(self) -> None:
        super()._disconnect()
        if self._lock is not None:
            self._lock.close()

    def _turn(self) -> WriterLock:
        """The writers' queue (:class:`WriterLock`): a group is taken once a sibling's commit is over."""
        return self._lock

    def _commit(self, batch: list[Pending]) -> list[int]:
        """Runs in the writer thread, its turn taken (:meth:`_turn`): one transaction for the whole batch."""
        conn = self._conn
        with transaction(conn):
            # Timestamps are unique across all nodes, not only per node (InfluxDB would overwrite a
            # node's reading that shares one), and strictly increasing in commit order, even if the
            # clock steps back. The newest one is read under the write lock (BEGIN IMMEDIATE), so
            # several writer processes (`tswarm serve --workers N`) take turns and never repeat one.
            # A kept reading (age) takes an older time that no reading of any node has, and a key
            # stored before is answered with its time (group.py's stamp_batch): both looked up under
            # the same lock, so two writers never store one key twice nor share a time.
            last, id_ = newest_stamp(conn), newest_id(conn)
            now = self.clock()
            answers, stamped = stamp_batch(
                batch, last, now,
                stored_key=lambda node_id, boot, seq: _first(conn.execute(STORED_KEY, (node_id, boot, seq))),
                taken=lambda ts: conn.execute(TAKEN, (ts,)).fetchone() is not None,
            )
            rows = [
                (id_, item.node_id, ts, item.temperature, item.humidity, *item.extra, *(item.key or (None, None)))
                for id_, (ts, item) in enumerate(stamped, id_ + 1)
            ]
            created = [(now, item.node_id) for item in batch if item.create]
            insert_rows(conn, rows)
            if created:
                conn.executemany("UPDATE nodes SET created_at = ? WHERE id = ? AND created_at IS NULL", created)
        return answers


INSERT_CHUNKS = (256, 64, 16, 4, 1)  # rows per INSERT statement: a few statements (cached) for any batch


def insert_rows(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """INSERT the readings ``rows`` in a few multi-row statements instead of one a row: the sqlite3
    module lets go of the GIL around every statement's step, so ``executemany`` hands the GIL back and
    forth with the event loop once a row; this does it a few times a group (chunks of
    :data:`INSERT_CHUNKS`, each statement text made once and cached by the connection)."""
    done = 0
    for size in INSERT_CHUNKS:
        while len(rows) - done >= size:
            chunk = rows[done:done + size]
            conn.execute(_insert_sql(size), [value for row in chunk for value in row])
            done += size


_INSERT_SQL: dict[int, str] = {}


def _insert_sql(rows: int) -> str:
    sql = _INSERT_SQL.get(rows)
    if sql is None:
        sql = _INSERT_SQL[rows] = INSERT_READING + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (rows - 1)
    return sql


def _first(cur: sqlite3.Cursor):
    row = cur.fetchone()
    return None if row is None else row[0]


class WriterRoom:
    conn: sqlite3.Connection
    path: Path

    def writer(self, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000) -> SqliteWriter:
        return SqliteWriter(self.path, synchronous=synchronous, max_batch=max_batch, max_queue=max_queue)

    def add_readings(self, rows: Iterable[tuple]) -> None:
        with transaction(self.conn):
            ids = {name: id_ for id_, name in self.conn.execute("SELECT id, name FROM nodes")}
            after = newest_id(self.conn)
            try:
                self.conn.executemany(
                    INSERT_READING,
                    (
                        (after + i, ids[row[0]], *row[1:4], *(row[4] if len(row) > 4 else NO_EXTRA), None, None)
                        for i, row in enumerate(rows, 1)
                    ),
                )
            except KeyError as exc:
                raise NodeNotFound(exc.args[0]) from None
