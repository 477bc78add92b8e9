"""The display right in storage (issue 17): ``nodes.display``, brought to an older journal once on
each engine (SQLite schema version 6, PostgreSQL version 6) with every node without it, then set
and read through the interface, and seen by the records the event loop serves (SQLite's registry
snapshot, PostgreSQL's cache) at the next lookup.

The older journals are made by the frozen migrations of their version (``MIGRATIONS[:5]``, which no
later version changes), as tests/storage/test_snapshot.py and test_pg_telemetry.py make theirs.
"""
from __future__ import annotations

import sqlite3

import psycopg
import pytest

from tswarm.storage import DB_FILENAME, open_storage
from tswarm.storage.sqlite import schema as sqlite_schema

from .conftest import add_nodes
from .test_pg_cache import _sql, cached, eventually, upgrade_at_once


def test_the_right_is_off_for_a_new_node_and_set_display_turns_it_on_and_off(storage):
    add_nodes(storage, "master", "porch")
    assert [(n.name, n.display) for n in storage.list_nodes()] == [("master", False), ("porch", False)]
    storage.set_display("master", True)
    assert storage.node_auth("master").display is True and storage.node_auth("porch").display is False
    assert [(n.name, n.display) for n in storage.list_nodes()] == [("master", True), ("porch", False)]
    halted_all, nodes = storage.swarm_nodes()
    assert (halted_all, nodes) == (False, storage.list_nodes())
    storage.set_halt(None, True)
    assert storage.swarm_nodes()[0] is True
    storage.set_display("master", False)
    assert storage.node_auth("master").display is False


def test_a_change_of_the_right_elsewhere_is_seen_by_the_next_lookup_of_the_loop(open_engine):
    """SQLite's snapshot or PostgreSQL's cache holds the record; another connection (another process)
    changes the right; the next lookup has it."""
    storage, other = open_engine(), open_engine()
    add_nodes(storage, "master")
    snapshot = storage.registry_snapshot()
    try:
        token, record = snapshot.read(storage, "master")
        snapshot.keep("master", token, record)
        assert record.display is False
        other.set_display("master", True)

        def seen() -> bool:
            current = snapshot.current("master")
            if current is None:  # not kept (or cleared): what the loop then reads in a thread
                current = snapshot.read(storage, "master")[1]
            return current.display is True

        assert eventually(seen)
    finally:
        snapshot.close()


# -- SQLite: version 5 -> 6 -----------------------------------------------------------------------


def _sqlite_at_version_5(data_dir) -> None:
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    before = sqlite_schema.MIGRATIONS.index(sqlite_schema._add_display)
    assert before == 5
    for migrate in sqlite_schema.MIGRATIONS[:before]:
        migrate(conn)
    conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at, interval_s) VALUES ('porch', 'h', 1, 2, 900)")
    conn.execute("INSERT INTO nodes (name, password_hash, registered_at, removed_at) VALUES ('gone', NULL, 1, 5)")
    conn.execute("INSERT INTO readings (id, node_id, ts, temperature, humidity) VALUES (1, 1, 10, 21.5, 40.0)")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.commit()
    conn.close()


def test_a_version_5_sqlite_journal_gains_the_display_right_once_and_keeps_its_nodes(tmp_path):
    data_dir = tmp_path / "data"
    _sqlite_at_version_5(data_dir)
    with open_storage(data_dir) as storage:
        assert storage.conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.SCHEMA_VERSION >= 6
        [porch] = storage.list_nodes()
        assert (porch.name, porch.interval_s, porch.last_ts, porch.display) == ("porch", 900, 10, False)
        assert storage.node_auth("porch").display is False and storage.node_names() == {1: "porch", 2: "gone"}
        storage.set_display("porch", True)
    with open_storage(data_dir) as storage:  # opened again: nothing to do, the right kept
        assert storage.node_auth("porch").display is True
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        column = [c for c in conn.execute("PRAGMA table_info(nodes)") if c[1] == "display"]
        assert [(c[2], c[3], c[4]) for c in column] == [("INTEGER", 1, "0")]  # type, NOT NULL, default
    finally:
        conn.close()


# -- PostgreSQL: version 5 -> 6 -------------------------------------------------------------------


def _postgres_at_version_5(url: str) -> None:
    from tswarm.storage.postgres import schema

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for migrate in schema.MIGRATIONS[:5]:
            migrate(conn)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (5)")
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at, interval_s)"
                     " VALUES ('porch', 'hash-1', 1, 2, 900)")
        conn.execute("INSERT INTO readings (id, node_id, ts, temperature, humidity) VALUES (1, 1, 10, 21.5, 40.0)")


def test_a_version_5_postgres_journal_gains_the_display_right_and_its_changes_reach_the_cache(postgres):
    from tswarm.storage.postgres import PostgresStorage, schema

    url = postgres.new_database()
    _postgres_at_version_5(url)
    with PostgresStorage(url) as storage:
        assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)] and schema.SCHEMA_VERSION >= 6
        [porch] = storage.list_nodes()
        assert (porch.name, porch.interval_s, porch.last_ts, porch.display) == ("porch", 900, 10, False)
        cache = cached(storage)
        assert cache.cached("porch").display is False
        _sql(url, "UPDATE nodes SET display = true WHERE name = 'porch'")  # another process: the trigger announces it
        assert eventually(lambda: storage.node_auth("porch").display is True)
    assert _sql(url, "SELECT data_type, is_nullable, column_default FROM information_schema.columns"
                     " WHERE table_name = 'nodes' AND column_name = 'display'") == [("boolean", "NO", "false")]


def test_two_processes_upgrading_a_version_5_postgres_journal_at_once_both_open_it(postgres):
    from tswarm.storage.postgres import schema

    url = postgres.new_database()
    _postgres_at_version_5(url)
    upgrade_at_once(url)
    assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    assert _sql(url, "SELECT name, display FROM nodes") == [("porch", False)]
