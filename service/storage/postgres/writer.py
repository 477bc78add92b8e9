"""The readings writer: group commit and timestamps. A 202 is promised from here.

:class:`PostgresWriter` commits everything that waits in one transaction with ``synchronous_commit``
on, and answers only after the COMMIT. Any number of writers (workers, instances on other machines)
share one database: each transaction that inserts readings first takes :data:`CLOCK_LOCK`
(``pg_advisory_xact_lock``), then reads the newest timestamp and id, as SQLite's writer does under
its write lock. So writers take turns, timestamps are unique and strictly increasing in commit order
across all of them (even when a clock steps back, and never below the pruning horizon), and ids
follow commit order (the forwarder's cursor relies on it).

A lost connection gets the batch one more transaction on a fresh connection, without storing it
twice when its COMMIT was sent but never answered (see :meth:`PostgresWriter._commit`); failing
again, the batch is :class:`StorageUnavailable` (nothing acknowledged). While the database is away
the writer probes it (service/storage/group.py), so it recovers by itself when the database returns.
"""
from __future__ import annotations

from typing import Iterable, Optional

import psycopg

from ..group import GroupCommitWriter, Pending, stamp_batch
from ..interface import FORWARD_CURSOR, NO_EXTRA, PRUNED_BEFORE, NodeNotFound, StorageUnavailable
from .connection import Connections, connect, redact, unavailable
from .schema import CLOCK_LOCK

INSERT_READINGS = (
    "INSERT INTO readings (id, node_id, ts, temperature, humidity, vbat, rssi, awake_ms, lost, boot, seq)"
    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[],"
    " %s::float8[], %s::integer[], %s::integer[], %s::integer[], %s::text[], %s::integer[])"
)
# The keys of a batch its nodes have stored already, in one round trip (readings_node_key).
STORED_KEYS = (
    "SELECT r.node_id, r.boot, r.seq, r.ts FROM unnest(%s::bigint[], %s::text[], %s::integer[]) AS k(node_id, boot, seq)"
    " JOIN readings r ON r.node_id = k.node_id AND r.boot = k.boot AND r.seq = k.seq AND r.seq IS NOT NULL"
)
TAKEN = "SELECT EXISTS (SELECT 1 FROM readings WHERE ts = %s)"  # readings_ts
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


def insert_readings(conn: psycopg.Connection, first_id: int, rows: list[tuple]) -> None:
    """Insert ``(node_id, ts, temperature, humidity, vbat, rssi, awake_ms, lost, boot, seq)`` rows
    with ids from ``first_id``, in one statement."""
    if not rows:
        return
    columns = [list(column) for column in zip(*rows)]
    ids = list(range(first_id, first_id + len(rows)))
    conn.execute(INSERT_READINGS, (ids, *columns))


def stored_keys(conn: psycopg.Connection, batch: list[Pending]) -> dict[tuple[int, str, int], int]:
    """``(node_id, boot, seq) -> ts`` of the keys of ``batch`` stored already."""
    keyed = [(item.node_id, *item.key) for item in batch if item.key is not None]
    if not keyed:
        return {}
    node_ids, boots, seqs = (list(column) for column in zip(*keyed))
    return {(n, b, q): ts for n, b, q, ts in conn.execute(STORED_KEYS, (node_ids, boots, seqs))}


# Which rows of a batch whose COMMIT was sent are in the journal (ids are given once, under the
# clock lock, so a batch's (id, node, ts) triples are its own).
FOUND = (
    "SELECT count(*) FROM readings r"
    " JOIN unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS b(id, node_id, ts)"
    " ON r.id = b.id AND r.node_id = b.node_id AND r.ts = b.ts"
)
RETRY_LOCK_TIMEOUT = "5s"  # a retry waits this long for the clock (a cut session may still hold it)


class _Cut(Exception):
    """The connection failed under a batch's transaction. ``sent``: the ``(ids, node_ids, stamps)``
    of the rows the batch inserted, and its answers, when its COMMIT had been sent (whether it
    committed is unknown), None when it failed before (nothing of it committed: a session that
    ends rolls its transaction back)."""

    def __init__(self, sent: Optional[tuple[tuple[list[int], list[int], list[int]], list[int]]] = None):
        self.sent = sent


class PostgresWriter(GroupCommitWriter):
    """Group commit on a connection of its own; ``synchronous="OFF"`` (benchmarks only) turns
    ``synchronous_commit`` off, anything else keeps it on."""

    _probes = True

    def __init__(self, url: str, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000):
        super().__init__(max_batch=max_batch, max_queue=max_queue)
        self._url = url
        self.synchronous = synchronous

    def __repr__(self) -> str:
        return f"<PostgresWriter {redact(self._url)}>"

    def _connect(self) -> psycopg.Connection:
        return connect(self._url, synchronous_commit=self.synchronous.upper() != "OFF")

    def _probe(self) -> None:
        """During an outage: does the writer's connection answer ``SELECT 1``, or else can a new
        one be made (it becomes the next batch's)? :class:`StorageUnavailable` if not."""
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._drop()
        self._conn = self._connect()

    def _commit(self, batch: list[Pending]) -> list[int]:
        """Runs in the writer thread: one transaction for the whole batch.

        When the connection fails under it (the server restarted since the last batch, the session
        was ended, a failover), the batch gets one more transaction on a fresh connection. A
        failure before the COMMIT was sent left nothing: the batch is stored from scratch. After
        it, the COMMIT may have been done with its answer lost: the fresh transaction first looks
        for the batch's rows and, when they are there, answers their timestamps; so a reading is
        never stored twice, and never refused when it was stored. Still failing, the batch is
        :class:`StorageUnavailable`: nothing acknowledged (it may be stored, unacknowledged)."""
        sent = None
        if self._conn is not None:
            try:
                return self._commit_on_connection(batch)
            except _Cut as cut:
                sent = cut.sent
        self._conn = self._connect()  # StorageUnavailable while the database is away
        try:
            return self._commit_on_connection(batch, sent, retry=True)
        except _Cut as cut:
            raise unavailable(cut.__cause__, self._url) from None

    def _commit_on_connection(self, batch: list[Pending], sent=None, *, retry: bool = False) -> list[int]:
        conn = self._conn
        committing = None
        try:
            with conn.transaction():
                if retry:
                    conn.execute(f"SET LOCAL lock_timeout = '{RETRY_LOCK_TIMEOUT}'")
                last, last_id = take_clock(conn)
                if sent is not None:
                    found = conn.execute(FOUND, sent[0]).fetchone()[0]
                    if found == len(sent[0][0]):  # it was committed: its answer was lost
                        committing = sent
                    elif found:
                        raise StorageUnavailable("a batch whose commit went unanswered is in the journal only in part")
                if committing is None:
                    now = self.clock()
                    known = stored_keys(conn, batch)
                    answers, stamped = stamp_batch(
                        batch, last, now, stored_key=lambda *key: known.get(key),
                        taken=lambda ts: conn.execute(TAKEN, (ts,)).fetchone()[0],
                    )
                    rows = [
                        (item.node_id, ts, item.temperature, item.humidity, *item.extra, *(item.key or (None, None)))
                        for ts, item in stamped
                    ]
                    insert_readings(conn, last_id + 1, rows)
                    created = sorted({item.node_id for item in batch if item.create})
                    if created:
                        conn.execute(
                            "UPDATE nodes SET created_at = %s WHERE id = ANY(%s::bigint[]) AND created_at IS NULL",
                            (now, created),
                        )
                    ids = list(range(last_id + 1, last_id + 1 + len(rows)))
                    committing = (ids, [row[0] for row in rows], [row[1] for row in rows]), answers
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop()
            raise _Cut(committing if committing is not None else sent) from exc
        return committing[1]

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

    def add_readings(self, rows: Iterable[tuple]) -> None:
        with self._transaction() as conn:
            ids = {name: id_ for id_, name in conn.execute("SELECT id, name FROM nodes")}
            _, last_id = take_clock(conn)
            chunk: list[tuple] = []
            for row in rows:
                node, ts, t, h = row[:4]
                vbat, *extra = row[4] if len(row) > 4 else NO_EXTRA
                try:
                    chunk.append((ids[node], ts, t, h, None if vbat is None else float(vbat), *extra, None, None))
                except KeyError:
                    raise NodeNotFound(node) from None
                if len(chunk) == CHUNK:
                    insert_readings(conn, last_id + 1, chunk)
                    last_id += len(chunk)
                    chunk = []
            insert_readings(conn, last_id + 1, chunk)
