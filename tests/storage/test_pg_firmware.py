"""The PostgreSQL engine's firmware room beyond what tests/storage/test_firmware.py checks on every
engine: schema version 3 brought to a version-2 journal (once, when two processes upgrade it
together), and the cache of nodes' records (service/storage/postgres/cache.py) kept exact when a
stage or a report is made by another storage or another process, and left alone by what changes no
record (a report of what is stored, a bundle kept).

The version-2 journal is made by the frozen migrations of that version (``MIGRATIONS[:2]``, which
no later version changes), as tests/storage/test_pg_cache.py makes a version-1 one.
"""
from __future__ import annotations

import subprocess
import sys
import time

import psycopg

from tswarm.storage import FirmwareState
from tswarm.storage.postgres import PostgresStorage, schema

from .test_pg_cache import upgrade_at_once, _sql, cached, eventually, pg  # noqa: F401 - pg is a fixture

STAGE = """
import sys
from tswarm.storage.postgres import PostgresStorage
with PostgresStorage(sys.argv[1]) as storage:
    storage.add_bundle("v1", [("node.py", b"x")], 1)
    storage.stage_bundle("v1", ["porch"], 2)
    storage.report_firmware("porch", "old", None, 3)
"""


def _at_version_2(url: str) -> None:
    """A journal as version 2 of the schema made it, with two nodes (one removed) and a reading."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for migrate in schema.MIGRATIONS[:2]:
            migrate(conn)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (2)")
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at, interval_s)"
                     " VALUES ('porch', 'hash-1', 1, 2, 900)")
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at, removed_at) VALUES ('gone', NULL, 1, 5)")
        conn.execute("INSERT INTO readings VALUES (1, 1, 10, 21.5, 40.0)")


def test_a_version_2_journal_gains_the_firmware_room_and_keeps_its_nodes(postgres):
    url = postgres.new_database()
    _at_version_2(url)
    with PostgresStorage(url) as storage:
        assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)] and schema.SCHEMA_VERSION >= 3
        [porch] = storage.list_nodes()
        assert (porch.name, porch.created_at, porch.interval_s, porch.last_ts, porch.firmware) == (
            "porch", 2, 900, 10, FirmwareState()
        )
        assert storage.node_auth("porch").password_hash == "hash-1" and storage.ever_registered("gone")
        storage.add_bundle("v1", [("node.py", b"x")], 5)
        assert storage.stage_bundle("v1", None, 6) == ["porch"]
        storage.report_firmware("porch", "v1", None, 7)
        assert storage.firmware_state("porch") == FirmwareState("v1", 7, "v1", 6, 7)
        cached(storage)  # the triggers of version 2 announce the new columns' changes too
        _sql(url, "UPDATE nodes SET fw_staged = NULL")
        assert eventually(lambda: storage.node_auth("porch").fw_staged is None)


def test_two_processes_upgrading_a_version_2_journal_at_once_both_open_it(postgres):
    url = postgres.new_database()
    _at_version_2(url)
    upgrade_at_once(url)
    assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    assert _sql(url, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'nodes'"
                     " AND starts_with(column_name, 'fw_')") == [(7,)]


# -- the cache of nodes' records stays exact ------------------------------------------------------------


def test_a_stage_and_a_report_made_by_another_process_are_seen_by_the_next_lookup(pg, postgres_url):
    cached(pg)
    subprocess.run([sys.executable, "-c", STAGE, postgres_url], check=True, timeout=60)
    assert eventually(lambda: (pg.node_auth("porch").fw_staged, pg.node_auth("porch").fw_running) == ("v1", "old"))


def test_a_stage_report_and_unstage_through_another_storage_are_seen(pg, postgres_url):
    with PostgresStorage(postgres_url) as other:
        other.add_bundle("v1", [("node.py", b"x")], 1)
        for change, then in [
            (lambda: other.stage_bundle("v1", None, 2), lambda auth: auth.fw_staged == "v1"),
            (lambda: other.report_firmware("porch", "old", "v1", 3), lambda auth: auth.fw_rolled_back == "v1"),
            (lambda: other.report_firmware("porch", "v1", None, 4), lambda auth: auth.fw_running == "v1"),
            (lambda: other.stage_bundle(None, ["porch"], 5), lambda auth: auth.fw_staged is None),
            (lambda: other.set_interval("porch", 900), lambda auth: auth.interval_s == 900),
        ]:
            cached(pg)
            change()
            assert eventually(lambda: then(pg.node_auth("porch"))), pg.node_auth("porch")


def test_a_report_of_what_is_stored_and_a_bundle_kept_say_nothing(pg, postgres_url):
    pg.report_firmware("porch", "old", None, 1)
    cache = cached(pg)
    generation = cache._generation
    pg.report_firmware("porch", "old", None, 2)  # every wake of a node reports the same: no write, no news
    pg.add_bundle("v1", [("node.py", b"x")], 3)  # no record holds a bundle
    time.sleep(0.2)  # what a notification would need to arrive (none must)
    assert cache._generation == generation and "porch" in cache._records
