"""The registry snapshot's storage side (service/storage/snapshot.py): SQLite's ``registry_version``
(schema version 5) that triggers move on every change of a node's record, whoever makes it; the
SQLite snapshot that serves records only at the version it read them at, and is bypassed when the
version cannot be read; the upgrade of a version-4 journal in place; PostgreSQL's cache answering
the event loop's question without a round trip.

Everything on real SQLite files and the real PostgreSQL cluster of tests/servers.py; the changes of
"another process" are made on connections of their own (plain sqlite3 / psycopg: no tswarm code).
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from tswarm.storage import DB_FILENAME, open_storage
from tswarm.storage.interface import HALT_ALL
from tswarm.storage.snapshot import RegistrySnapshot
from tswarm.storage.sqlite import SCHEMA_VERSION, SqliteStorage, schema
from tswarm.storage.sqlite.snapshot import SqliteSnapshot, wal_index_map

UP_S = 10.0  # PostgreSQL's listener connects within this


def _version(path) -> int:
    """The journal's registry version, read on a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version FROM registry_version").fetchone()[0]
    finally:
        conn.close()


def _raw(path, *statements) -> None:
    """``statements`` in one transaction of a plain sqlite3 connection, as the sqlite3 shell runs them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
def sq(tmp_path):
    with SqliteStorage.open(tmp_path / "data") as storage:
        storage.add_node("porch", "hash-1")
        yield storage


# Every change of a node's record through the interface, each as another process would make it.
CHANGES = {
    "add": lambda s: s.add_node("attic", "h"),
    "password": lambda s: s.set_password("porch", "hash-2"),
    "remove": lambda s: s.remove_node("porch"),
    "interval": lambda s: s.set_interval("porch", 600),
    "created": lambda s: s.mark_created("porch", 5),
    "halt": lambda s: s.set_halt("porch", True),
    "halt all": lambda s: s.set_halt(None, True),
    "resume all": lambda s: s.set_halt(None, False),
    "stage": lambda s: (s.add_bundle("v1", [("node.py", b"x")], 1), s.stage_bundle("v1", ["porch"], 2)),
    "report firmware": lambda s: s.report_firmware("porch", "v0", None, 3),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_of_a_record_moves_the_registry_version_in_its_own_commit(sq, change):
    before = _version(sq.path)
    with SqliteStorage(sq.path) as other:
        CHANGES[change](other)
    assert _version(sq.path) > before


async def test_the_writers_first_post_moves_the_version_and_later_readings_do_not(sq):
    writer = sq.writer()
    await writer.start()
    try:
        porch = sq.node_auth("porch").id
        before = _version(sq.path)
        await writer.append(porch, 20.0, 50.0, create=True)
        created = _version(sq.path)
        await writer.append(porch, 20.0, 50.0, create=True)  # created already: the row is not touched
        await writer.append(porch, 20.0, 50.0)
    finally:
        await writer.close()
    assert created > before and _version(sq.path) == created


def test_other_meta_and_readings_leave_the_version_alone(sq):
    before = _version(sq.path)
    sq.set_meta("forward_cursor", "7")
    sq.add_readings([("porch", 1, 20.0, 50.0)])
    assert _version(sq.path) == before


@pytest.mark.parametrize("statements", [
    ("UPDATE nodes SET halted = 1 WHERE name = 'porch'",),
    ("UPDATE nodes SET password_hash = 'x' WHERE name = 'porch'",),
    ("DELETE FROM nodes",),
    ("INSERT INTO nodes (name, password_hash, registered_at) VALUES ('shed', 'h', 1)",),
    (f"INSERT INTO meta (key, value) VALUES ('{HALT_ALL}', '1')",),
    (f"INSERT INTO meta (key, value) VALUES ('{HALT_ALL}', '1')", f"UPDATE meta SET value = '0' WHERE key = '{HALT_ALL}'"),
    (f"INSERT INTO meta (key, value) VALUES ('{HALT_ALL}', '1')", f"DELETE FROM meta WHERE key = '{HALT_ALL}'"),
], ids=["halt", "password", "delete", "insert", "halt all", "halt all changed", "halt all deleted"])
def test_a_change_typed_in_the_sqlite3_shell_moves_the_version_too(sq, statements):
    before = _version(sq.path)
    _raw(sq.path, *statements)
    assert _version(sq.path) > before


def _miss_then_keep(snapshot: SqliteSnapshot, storage: SqliteStorage, name: str):
    """What the pool does on a miss: read in "a thread" (here: with ``storage``), keep on "the loop"."""
    assert snapshot.current(name) is None
    token, record = snapshot.read(storage, name)
    snapshot.keep(name, token, record)
    return record


def test_the_sqlite_snapshot_serves_a_kept_record_until_another_connection_changes_it(sq):
    snapshot = sq.registry_snapshot()
    try:
        record = _miss_then_keep(snapshot, sq, "porch")
        assert snapshot.current("porch") is record  # served without a read of the record
        _raw(sq.path, "UPDATE nodes SET interval_s = 60 WHERE name = 'porch'")  # the sqlite3 shell, committed
        assert snapshot.current("porch") is None  # the very next lookup
        assert _miss_then_keep(snapshot, sq, "porch").interval_s == 60
        assert snapshot.current("porch").interval_s == 60
    finally:
        snapshot.close()


def test_a_record_read_before_a_change_is_not_kept_after_it(sq):
    snapshot = sq.registry_snapshot()
    try:
        assert snapshot.current("porch") is None
        token, record = snapshot.read(sq, "porch")  # read at the old version ...
        _raw(sq.path, "UPDATE nodes SET halted = 1 WHERE name = 'porch'")  # ... a change commits meanwhile
        snapshot.keep("porch", token, record)
        assert snapshot.current("porch") is None
        assert _miss_then_keep(snapshot, sq, "porch").halted
    finally:
        snapshot.close()


def test_unknown_names_are_not_kept(sq):
    snapshot = sq.registry_snapshot()
    try:
        assert _miss_then_keep(snapshot, sq, "nobody") is None
        assert snapshot._records == {}
    finally:
        snapshot.close()


def test_a_version_that_cannot_be_read_bypasses_the_snapshot_until_it_can(sq):
    snapshot = sq.registry_snapshot()
    try:
        _miss_then_keep(snapshot, sq, "porch")
        _raw(sq.path, "DELETE FROM registry_version")  # by hand: no row to read
        assert snapshot.current("porch") is None
        token, record = snapshot.read(sq, "porch")
        snapshot.keep("porch", token, record)
        assert token is None and snapshot.current("porch") is None  # nothing kept while it cannot be read
        _raw(sq.path, "INSERT INTO registry_version (id, version) VALUES (1, 100)")
        assert _miss_then_keep(snapshot, sq, "porch") == record and snapshot.current("porch") == record
    finally:
        snapshot.close()


def test_a_locked_journal_does_not_hold_the_check_up(sq):
    """Another process holding the write lock with a change under way (EXCLUSIVE, as the shell may
    take it) does not stop the loop's check: WAL readers do not wait for writers, and the check,
    which never waits (busy timeout 0), answers the committed state rather than bypassing."""
    snapshot = sq.registry_snapshot()
    lock = sqlite3.connect(sq.path, isolation_level=None)
    try:
        record = _miss_then_keep(snapshot, sq, "porch")
        lock.execute("BEGIN EXCLUSIVE")
        lock.execute("UPDATE nodes SET halted = 1 WHERE name = 'porch'")  # not committed: not seen
        assert snapshot.current("porch") == record  # a busy check would have bypassed: None
        lock.execute("COMMIT")
        assert snapshot.current("porch") is None
    finally:
        lock.close()
        snapshot.close()


def test_a_closed_snapshot_serves_nothing(sq):
    snapshot = sq.registry_snapshot()
    _miss_then_keep(snapshot, sq, "porch")
    snapshot.close()
    snapshot.close()
    assert snapshot.current("porch") is None


def test_the_default_snapshot_keeps_nothing(sq):
    snapshot = RegistrySnapshot()
    token, record = snapshot.read(sq, "porch")
    snapshot.keep("porch", token, record)
    assert record is not None and snapshot.current("porch") is None


def test_a_version_4_journal_gains_the_registry_version_in_place_and_keeps_its_nodes(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / DB_FILENAME
    conn = sqlite3.connect(path)
    before = schema.MIGRATIONS.index(schema._add_registry_version)
    assert before == 4 and SCHEMA_VERSION >= 5
    for migrate in schema.MIGRATIONS[:before]:
        migrate(conn)
    conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at, halted) VALUES ('porch', 'h', 1, 2, 1)")
    conn.execute(f"INSERT INTO meta (key, value) VALUES ('{HALT_ALL}', '0')")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.commit()
    conn.close()
    with open_storage(data_dir) as storage:
        assert storage.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        porch = storage.node_auth("porch")
        assert (porch.name, porch.password_hash, porch.created, porch.halted) == ("porch", "h", True, True)
        triggers = {row[0] for row in storage.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert {"registry_nodes_insert", "registry_nodes_update", "registry_nodes_delete"} <= triggers
        start = _version(path)
        storage.set_halt("porch", False)
        assert _version(path) == start + 1 and not storage.node_auth("porch").halted
    with open_storage(data_dir) as storage:  # opened again: nothing to do, nothing bumped
        assert _version(path) == start + 1


# -- PostgreSQL: the process's cache, asked on the event loop ----------------------------------------


def _listening(storage):
    storage.node_auth("porch")
    cache = storage._registry_cache
    deadline = time.monotonic() + UP_S
    while not cache.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.listening
    return cache


@pytest.mark.engines("postgres")
def test_postgresql_serves_the_loop_from_its_cache_and_a_change_elsewhere_clears_it(postgres_url):
    import psycopg

    from tswarm.storage.postgres import PostgresStorage

    with PostgresStorage(postgres_url) as storage:
        storage.add_node("porch", "hash-1")
        snapshot = storage.registry_snapshot()
        try:
            assert snapshot.current("porch") is None  # nothing kept yet
            cache = _listening(storage)
            storage.node_auth("porch")  # a miss read in a thread keeps it in the cache
            assert snapshot.current("porch") == cache.cached("porch") and snapshot.current("porch").password_hash == "hash-1"
            with psycopg.connect(postgres_url, autocommit=True) as conn:  # another process
                conn.execute("UPDATE nodes SET halted = true WHERE name = 'porch'")
            deadline = time.monotonic() + UP_S
            while snapshot.current("porch") is not None:  # its notification arrives: never served again
                assert time.monotonic() < deadline
                time.sleep(0.001)
            assert storage.node_auth("porch").halted
        finally:
            snapshot.close()
            snapshot.close()
        assert snapshot.current("porch") is None


def _statements(snapshot) -> list[str]:
    """Every statement the snapshot's own connection runs from now on."""
    seen: list[str] = []
    snapshot._conn.set_trace_callback(seen.append)
    return seen


def test_the_check_asks_sqlite_only_after_a_commit_and_every_commit_is_noticed(sq):
    """The WAL index header (the journal's -shm, read through a mapping) says whether anyone committed since
    the counter was read: while nobody did, a lookup runs no statement; after any commit (a reading,
    which leaves the registry alone, or a change of it) the next lookup reads the counter once."""
    snapshot = sq.registry_snapshot()
    try:
        record = _miss_then_keep(snapshot, sq, "porch")
        assert snapshot._wal_index is not None  # WAL: the index is read
        ran = _statements(snapshot)
        for _ in range(100):
            assert snapshot.current("porch") is record
        assert ran == []
        _raw(sq.path, "INSERT INTO meta (key, value) VALUES ('someone', 'else')")  # a commit, not of the registry
        assert snapshot.current("porch") is record and len(ran) == 1  # asked once, still the same version
        assert snapshot.current("porch") is record and len(ran) == 1
        _raw(sq.path, "UPDATE nodes SET interval_s = 60 WHERE name = 'porch'")
        assert snapshot.current("porch") is None and len(ran) == 2  # the very next lookup
    finally:
        snapshot.close()


def test_without_a_wal_index_every_check_asks_sqlite(sq):
    snapshot = sq.registry_snapshot()
    try:
        record = _miss_then_keep(snapshot, sq, "porch")
        snapshot._wal_index = None
        snapshot._open_wal_index = lambda: None  # as with a journal whose -shm cannot be opened
        ran = _statements(snapshot)
        assert snapshot.current("porch") is record and snapshot.current("porch") is record
        assert len(ran) == 2
        _raw(sq.path, "UPDATE nodes SET interval_s = 60 WHERE name = 'porch'")
        assert snapshot.current("porch") is None
    finally:
        snapshot.close()


# SQLite's shared "in use" lock on the WAL index (its DMS lock): byte 128 of the -shm file (UNIX_SHM_BASE
# 120 + SQLITE_SHM_NLOCK 8, sqlite3's os_unix.c), held shared by every process with the journal open.
_DMS_LOCK = 128
_TAKE_DMS = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
except OSError:
    sys.exit(3)  # held by another process: the journal is in use
sys.exit(0)
"""


def _in_use_as_another_process_sees_it(path) -> bool:
    """Whether another process finds the journal's WAL index in use (it cannot take SQLite's DMS lock
    exclusively). One that can takes the index for unused and rebuilds it under the holder's connections."""
    proc = subprocess.run([sys.executable, "-c", _TAKE_DMS, f"{path}-shm", str(_DMS_LOCK)], timeout=30)
    assert proc.returncode in (0, 3), proc
    return proc.returncode == 3


def test_reading_the_wal_index_keeps_sqlite_s_locks_on_it(sq):
    """POSIX advisory locks belong to the process: closing any descriptor of the -shm drops SQLite's own.
    The snapshot opened the file, mapped its header and closed the descriptor: from then on another
    process (`tswarm status` during the outage test of tests/integration/test_influx.py) rebuilt the
    index under `tswarm serve`, which died of SIGBUS reading its truncated mapping. The snapshot keeps
    its descriptor and its mapping of the header, also after it is closed, while the storage's
    connections still use the file."""
    assert _in_use_as_another_process_sees_it(sq.path)
    snapshot = sq.registry_snapshot()
    try:
        _miss_then_keep(snapshot, sq, "porch")
        assert snapshot._wal_index is not None and snapshot.current("porch") is not None  # the header was read
        assert _in_use_as_another_process_sees_it(sq.path)
        again = sq.registry_snapshot()  # a second snapshot of the journal reads the same mapping
        try:
            _miss_then_keep(again, sq, "porch")
            assert again._wal_index is snapshot._wal_index
        finally:
            again.close()
    finally:
        snapshot.close()
    assert _in_use_as_another_process_sees_it(sq.path)


def test_a_wal_index_shorter_than_its_header_is_not_mapped_until_it_has_grown(tmp_path):
    """As while another process rebuilds the index: no header yet, so every check reads the counter;
    once the file has its header, it is mapped (and the descriptor opened for it was kept meanwhile)."""
    journal = tmp_path / "other.db"
    shm = tmp_path / "other.db-shm"  # not a journal SQLite uses: nothing here drops a lock of SQLite's
    shm.write_bytes(b"\0" * 10)
    assert wal_index_map(journal) is None
    assert wal_index_map(journal) is None
    header = bytes(range(48))
    shm.write_bytes(header + b"\xff" * 100)  # the same file, grown
    mapped = wal_index_map(journal)
    assert mapped is not None and mapped[:48] == header
    assert wal_index_map(journal) is mapped
    os.truncate(shm, 3)  # SQLite truncates the index to 3 bytes before it rebuilds it: the page stays mapped
    assert mapped[:48] == header[:3] + b"\0" * 45  # a header that differs: the counter is read
    assert wal_index_map(tmp_path / "none.db") is None


def test_the_check_reads_the_header_without_a_system_call(sq, monkeypatch):
    """os.pread would let go of the GIL on the event loop and hand it to the journal's writer thread
    (benchmarks/gil.py measures what that costs): while nobody commits, a lookup calls into no os function."""
    snapshot = sq.registry_snapshot()
    try:
        record = _miss_then_keep(snapshot, sq, "porch")
        for name in ("pread", "read", "stat", "fstat", "lseek"):
            monkeypatch.setattr(os, name, _refused(name))
        assert snapshot.current("porch") is record and snapshot.current("porch") is record
    finally:
        monkeypatch.undo()
        snapshot.close()


def _refused(name):
    def call(*args, **kwargs):
        raise AssertionError(f"os.{name} called on the lookup's path")
    return call
