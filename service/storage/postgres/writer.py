"""The readings writer: group commit and timestamps. A 202 is promised from here.

:class:`PostgresWriter` commits everything that waits in one transaction with ``synchronous_commit``
on, and answers only after the COMMIT. Any number of writers (workers, instances on other machines)
share one database: each transaction that inserts readings first takes :data:`CLOCK_LOCK`
(``pg_advisory_xact_lock``), then reads the newest timestamp and id, as SQLite's writer does under
its write lock. So writers take turns, timestamps are unique and strictly increasing in commit order
across all of them (even when a clock steps back, and never below the pruning horizon), and ids
follow commit order (the forwarder's cursor relies on it).

A lost connection fails its batch (:class:`StorageUnavailable`: nothing acknowledged); the next
batch connects again, so the writer recovers by itself when the database returns.
"""
from __future__ import annotations

import time
from typing import Iterable

import psycopg

from ..group import GroupCommitWriter, Pending
from ..interface import FORWARD_CURSOR, PRUNED_BEFORE, NodeNotFound
from .connection import Connections, connect, redact, unavailable
from .schema import CLOCK_LOCK

INSERT_READINGS = (
    "INSERT INTO readings (id, node_id, ts, temperature, humidity)"
    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[])"
)
# The newest timestamp ever handed out (the newest reading's, or an emptied journal's newest pruned
# one's) and the newest id (never at or below the forward cursor, even when every reading was pruned).
NEWEST = (
    "SELECT GREATEST(COALESCE((SELECT MAX(ts) FROM readings), 0),"
    "                COALESCE((SELECT value::bigint - 1 FROM meta WHERE key = %s), 0)),"
    "       GREATEST(COALESCE((SELECT MAX(id) FROM readings), 0),"
    "                COALESCE((SELECT value::bigint FROM meta WHERE key = %s), 0))"
)
CHUNK = 10_000  # rows per INSERT of add_readings


def take_clock(conn: psycopg.Connection) -> tuple[int, int]:
    """Inside a transaction: wait for the clock, then the newest ``(ts, id)`` ever given."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLOCK_LOCK,))
    return conn.execute(NEWEST, (PRUNED_BEFORE, FORWARD_CURSOR)).fetchone()


def insert_readings(conn: psycopg.Connection, first_id: int, rows: list[tuple[int, int, float, float]]) -> None:
    """Insert ``(node_id, ts, temperature, humidity)`` rows with ids from ``first_id``, in one statement."""
    node_ids, stamps, temperatures, humidities = (list(column) for column in zip(*rows))
    ids = list(range(first_id, first_id + len(rows)))
    conn.execute(INSERT_READINGS, (ids, node_ids, stamps, temperatures, humidities))


class _DiedIdle(Exception):
    """The connection failed before the batch's first write: nothing of it reached the database."""


class PostgresWriter(GroupCommitWriter):
    """Group commit on a connection of its own; ``synchronous="OFF"`` (benchmarks only) turns
    ``synchronous_commit`` off, anything else keeps it on."""

    def __init__(self, url: str, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000):
        super().__init__(max_batch=max_batch, max_queue=max_queue)
        self._url = url
        self.synchronous = synchronous

    def __repr__(self) -> str:
        return f"<PostgresWriter {redact(self._url)}>"

    def _connect(self) -> psycopg.Connection:
        return connect(self._url, synchronous_commit=self.synchronous.upper() != "OFF")

    def _commit(self, batch: list[Pending]) -> list[int]:
        """Runs in the writer thread: one transaction for the whole batch. A connection that died
        while idle (the server restarted since the last batch) fails before anything is sent but
        BEGIN and the lock; the batch then gets one fresh connection."""
        if self._conn is not None:
            try:
                return self._commit_on_connection(batch)
            except _DiedIdle:
                pass
        self._conn = self._connect()  # StorageUnavailable while the database is away
        try:
            return self._commit_on_connection(batch)
        except _DiedIdle as died:
            raise unavailable(died.__cause__, self._url) from None

    def _commit_on_connection(self, batch: list[Pending]) -> list[int]:
        conn = self._conn
        writing = False
        try:
            with conn.transaction():
                last, last_id = take_clock(conn)
                writing = True
                now = time.time_ns()
                rows = []
                for item in batch:
                    last = now if now > last else last + 1
                    rows.append((item.node_id, last, item.temperature, item.humidity))
                insert_readings(conn, last_id + 1, rows)
                created = sorted({item.node_id for item in batch if item.create})
                if created:
                    conn.execute(
                        "UPDATE nodes SET created_at = %s WHERE id = ANY(%s::bigint[]) AND created_at IS NULL",
                        (now, created),
                    )
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop()
            if not writing:
                raise _DiedIdle() from exc
            raise unavailable(exc, self._url) from None  # the COMMIT's fate unknown: nothing acknowledged
        return [row[1] for row in rows]

    def _drop(self) -> None:
        """Let go of a connection that failed (its server may be gone); the next batch connects anew."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class WriterRoom(Connections):
    def writer(self, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000) -> PostgresWriter:
        return PostgresWriter(self._url, synchronous=synchronous, max_batch=max_batch, max_queue=max_queue)

    def add_readings(self, rows: Iterable[tuple[str, int, float, float]]) -> None:
        with self._transaction() as conn:
            ids = {name: id_ for id_, name in conn.execute("SELECT id, name FROM nodes")}
            _, last_id = take_clock(conn)
            chunk: list[tuple[int, int, float, float]] = []
            for node, ts, t, h in rows:
                try:
                    chunk.append((ids[node], ts, t, h))
                except KeyError:
                    raise NodeNotFound(node) from None
                if len(chunk) == CHUNK:
                    insert_readings(conn, last_id + 1, chunk)
                    last_id += len(chunk)
                    chunk = []
            if chunk:
                insert_readings(conn, last_id + 1, chunk)
