"""The SQLite journal's file: its DDL, its schema version and migrations, connections, transactions.

The schema version is ``PRAGMA user_version``. Opening a journal brings it to :data:`SCHEMA_VERSION`
by running the migrations it lacks, in one write transaction (another process opening it at the same
time waits, then finds nothing to do). Version 0 is an empty file or a journal of tswarm before
versions were kept (the same tables as version 1); version 2 adds the firmware room (each node's
``fw_*`` columns, the ``bundles`` and ``bundle_files`` tables); version 3 each reading's telemetry
and its exactly-once key (the ``vbat``, ``rssi``, ``awake_ms``, ``lost``, ``boot``, ``seq`` columns
and the unique index ``readings_node_key``); version 4 the alerts room (``alert_states`` and
``alerts``, service/storage/sqlite/alerts.py); version 5 the registry's version
(``registry_version`` and the triggers that bump it on every change of ``nodes`` and of the
``halt_all`` row of ``meta``, whoever makes it: service/storage/sqlite/snapshot.py); version 6 each
node's display right (``nodes.display``: it may read the swarm's summary, service/swarm.py). A journal
of a newer version than this code knows is refused (:class:`StorageUnusable`): an older tswarm must not write into it.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from ..interface import HALT_ALL, StorageUnusable

DB_FILENAME = "tswarm.db"
BUSY_TIMEOUT_MS = 10_000

# Version 1: the tables of every tswarm so far (one statement per item: comments may hold ';').
TABLES_V1 = (
    """CREATE TABLE IF NOT EXISTS nodes (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,              -- 'scrypt$n$r$p$salt$hash'; NULL once removed
    registered_at INTEGER NOT NULL,  -- ns since the epoch
    created_at    INTEGER,           -- first POST; NULL: a PUT is answered 405
    removed_at    INTEGER,
    halted        INTEGER NOT NULL DEFAULT 0,
    interval_s    INTEGER NOT NULL DEFAULT 300
)""",
    """CREATE TABLE IF NOT EXISTS readings (
    id          INTEGER PRIMARY KEY,   -- commit order: the forwarder's cursor
    node_id     INTEGER NOT NULL,
    ts          INTEGER NOT NULL,      -- ns since the epoch, server clock, strictly increasing (unique across nodes)
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS readings_node_ts ON readings (node_id, ts)",
    "CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts)",
    """CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS rejected (    -- readings InfluxDB refused for good (a 400): kept, not retried
    reading_id  INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    temperature REAL NOT NULL,
    humidity    REAL NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at INTEGER NOT NULL
)""",
)


def _to_v1(conn: sqlite3.Connection) -> None:
    """An empty file gets the tables; an unversioned journal has them already and keeps every row."""
    for statement in TABLES_V1:
        conn.execute(statement)


# Version 2: over-the-air updates (service/bundles.py). Each node's firmware state (NULL: nothing
# reported, staged, updated or rolled back), and the bundles, kept by version (the hash of their files).
FIRMWARE_V2 = (
    "ALTER TABLE nodes ADD COLUMN fw_running TEXT",  # the version it last reported (X-Tswarm-Firmware)
    "ALTER TABLE nodes ADD COLUMN fw_reported_at INTEGER",  # when it first reported fw_running
    "ALTER TABLE nodes ADD COLUMN fw_staged TEXT",  # the bundle staged for it
    "ALTER TABLE nodes ADD COLUMN fw_staged_at INTEGER",
    "ALTER TABLE nodes ADD COLUMN fw_updated_at INTEGER",  # when it first reported running fw_staged
    "ALTER TABLE nodes ADD COLUMN fw_rolled_back TEXT",  # the version it last gave up (X-Tswarm-Rolled-Back)
    "ALTER TABLE nodes ADD COLUMN fw_rolled_back_at INTEGER",
    """CREATE TABLE bundles (
    version    TEXT PRIMARY KEY,     -- service/bundles.py version_of(files)
    created_at INTEGER NOT NULL
)""",
    """CREATE TABLE bundle_files (
    version TEXT NOT NULL,
    name    TEXT NOT NULL,           -- the board's file name, no folders
    sha256  TEXT NOT NULL,           -- hex, of content
    content BLOB NOT NULL,
    PRIMARY KEY (version, name)
)""",
)


def _to_v2(conn: sqlite3.Connection) -> None:
    for statement in FIRMWARE_V2:
        conn.execute(statement)


# Version 3: telemetry and kept readings (issue 15). Each reading's optional telemetry (NULL: not
# sent) and its key (boot, seq), stored once per node: the partial unique index holds only readings
# that have one (every reading before this version has none), and answers the writer's lookup of a
# key sent again. Adding a column is O(1) in SQLite; the index is built by one scan of readings.
TELEMETRY_V3 = (
    "ALTER TABLE readings ADD COLUMN vbat REAL",  # supply/battery voltage, V
    "ALTER TABLE readings ADD COLUMN rssi INTEGER",  # Wi-Fi RSSI, dBm
    "ALTER TABLE readings ADD COLUMN awake_ms INTEGER",  # how long the board's previous wake took
    "ALTER TABLE readings ADD COLUMN lost INTEGER",  # kept readings the board dropped before this one
    "ALTER TABLE readings ADD COLUMN boot TEXT",  # the board's boot identity
    "ALTER TABLE readings ADD COLUMN seq INTEGER",  # the reading's sequence within boot
    "CREATE UNIQUE INDEX readings_node_key ON readings (node_id, boot, seq) WHERE seq IS NOT NULL",
)


def _to_v3(conn: sqlite3.Connection) -> None:
    for statement in TELEMETRY_V3:
        conn.execute(statement)


def _add_alerts(conn: sqlite3.Connection) -> None:
    """Version 4: the alerts room (service/storage/sqlite/alerts.py): each node's judged state, the alerts' outbox."""
    from .alerts import ALERTS_TABLES  # the room keeps its DDL beside its SQL

    for statement in ALERTS_TABLES:
        conn.execute(statement)


# Version 5: the registry's version, one counter that every change of a node's record moves, in the
# change's own transaction, whoever makes it (tswarm, another process, the sqlite3 shell): the event
# loop's snapshot of nodes' records (service/storage/sqlite/snapshot.py) is exact while it is unchanged.
# Every row inserted, updated or deleted in ``nodes`` counts (an UPDATE that changes nothing too: tswarm
# writes none in steady state, the writer's "created_at = now WHERE created_at IS NULL" matches only a
# node's first POST); of ``meta`` only the halt_all row: the forward cursor changes all the time.
REGISTRY_VERSION = "SELECT version FROM registry_version"
_BUMP = "UPDATE registry_version SET version = version + 1"
REGISTRY_VERSION_V5 = (
    """CREATE TABLE registry_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),  -- one row
    version INTEGER NOT NULL
)""",
    "INSERT INTO registry_version (id, version) VALUES (1, 0)",
    *(f"CREATE TRIGGER registry_nodes_{op.lower()} AFTER {op} ON nodes BEGIN {_BUMP}; END"
      for op in ("INSERT", "UPDATE", "DELETE")),
    f"CREATE TRIGGER registry_halt_all_insert AFTER INSERT ON meta WHEN NEW.key = '{HALT_ALL}' BEGIN {_BUMP}; END",
    f"CREATE TRIGGER registry_halt_all_update AFTER UPDATE ON meta"
    f" WHEN NEW.key = '{HALT_ALL}' OR OLD.key = '{HALT_ALL}' BEGIN {_BUMP}; END",
    f"CREATE TRIGGER registry_halt_all_delete AFTER DELETE ON meta WHEN OLD.key = '{HALT_ALL}' BEGIN {_BUMP}; END",
)


def _add_registry_version(conn: sqlite3.Connection) -> None:
    for statement in REGISTRY_VERSION_V5:
        conn.execute(statement)


def _add_display(conn: sqlite3.Connection) -> None:
    """Version 6: each node's display right (issue 17): with it, its own credentials read the swarm's
    summary (``GET /api/nodes/{name}/swarm``: a master node's screen). Every node so far has none. O(1)
    in SQLite; the column's change of every row is no row change (the registry triggers stay quiet)."""
    conn.execute("ALTER TABLE nodes ADD COLUMN display INTEGER NOT NULL DEFAULT 0")


# MIGRATIONS[n] brings a journal from version n to n + 1; a new version appends one function.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _to_v1, _to_v2, _to_v3, _add_alerts, _add_registry_version, _add_display,
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, ``synchronous`` as asked."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _wal(conn)  # the first read of the file: "file is not a database" is here
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode = WAL``. Switching a journal that is not in WAL yet (an old one, or one made
    by another tool) needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy handler, when another connection switches it too: so that is retried here for as long
    as the busy timeout, as any other lock is waited for."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def upgrade(conn: sqlite3.Connection, path: Path, *, create: bool = True) -> None:
    """Bring the journal at ``path`` to :data:`SCHEMA_VERSION` (nothing to do: no write at all). A file
    without a journal yet (empty) gets one only when ``create``; a SQLite database of something else
    is never written to."""
    version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise _too_new(path, version)
    with transaction(conn):
        version = schema_version(conn)  # under the write lock: another process may have done it
        if version > SCHEMA_VERSION:
            raise _too_new(path, version)
        if version == 0:
            _check_unversioned(conn, path, create)
        for migrate in MIGRATIONS[version:]:
            migrate(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check_unversioned(conn: sqlite3.Connection, path: Path, create: bool) -> None:
    """A file at version 0 is empty (a journal is made in it if ``create``), or an unversioned journal
    (the first tswarm's: nodes and readings), or not a journal at all."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables and not {"nodes", "readings"} <= tables:
        raise StorageUnusable(
            f"journal {path} is not a tswarm journal (a SQLite database of something else); move it away"
            " (or give another --data-dir / TSWARM_DATA_DIR)"
        )
    if not tables and not create:
        raise StorageUnusable(
            f"no journal in {path.parent} ({path.name} is empty): 'tswarm node add' or 'tswarm serve' creates it"
            " (is --data-dir or TSWARM_DATA_DIR right?)"
        )


def _too_new(path: Path, version: int) -> StorageUnusable:
    return StorageUnusable(
        f"journal {path} has schema version {version}, newer than this tswarm knows ({SCHEMA_VERSION}); upgrade tswarm"
    )


def check_data_dir(data_dir: Path | str, create: bool = True) -> Path:
    """``data_dir`` as a folder this process may write in (created, with its parents, if ``create``);
    :class:`StorageUnusable` otherwise."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise StorageUnusable(f"data dir {data_dir} is a file, not a folder (check --data-dir or TSWARM_DATA_DIR)")
    blocker = next((p for p in data_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise StorageUnusable(f"data dir {data_dir} cannot be created: {blocker} is a file, not a folder")
    if create:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnusable(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    if data_dir.is_dir() and not os.access(data_dir, os.W_OK | os.X_OK):
        raise StorageUnusable(f"data dir {data_dir} is not writable by this user (the journal writes beside tswarm.db)")
    return data_dir


def unusable(path: Path, exc: sqlite3.Error) -> StorageUnusable:
    """The one-line error for a journal file SQLite cannot open."""
    if path.is_dir():
        return StorageUnusable(f"journal {path} is a folder, not a file; move it away")
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return StorageUnusable(
            f"journal {path} is not a tswarm journal ({exc}); move it away (or give another --data-dir / TSWARM_DATA_DIR)"
        )
    return StorageUnusable(f"cannot open journal {path}: {exc}")


def open_connection(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """A connection to the journal at ``path``, its data dir checked and its schema current (made in a
    new or empty file only when ``create``). A new file is readable by its owner alone (SQLite gives
    its -wal and -shm the same mode): the journal holds password hashes and staged Wi-Fi passwords."""
    check_data_dir(path.parent)
    if create and not path.exists():
        # Only a new file: closing a descriptor of a file drops every POSIX lock this process holds on
        # it, SQLite's of the other connections included.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:
            pass  # made meanwhile, or no permission: connect() says so, in its words
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise unusable(path, exc) from None
    try:
        upgrade(conn, path, create=create)
    except sqlite3.Error as exc:
        conn.close()
        raise unusable(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


class snapshot:
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


class transaction:
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
