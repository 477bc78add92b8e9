"""The PostgreSQL engine's telemetry beyond what tests/storage/test_telemetry.py checks on every
engine: schema version 4 brought to a version-3 journal (also when two processes upgrade it
together), and one key sent to two processes at once (two instances sharing the database) stored
once, each answered with the same time.

The version-3 journal is made by the frozen migrations of that version (``MIGRATIONS[:3]``, which no
later version changes), as tests/storage/test_pg_firmware.py makes a version-2 one.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import psycopg

from tswarm.storage import Duplicate, ReadingExtra
from tswarm.storage.postgres import PostgresStorage, schema

from .test_pg_cache import upgrade_at_once, _sql


def _at_version_3(url: str) -> None:
    """A journal as version 3 of the schema made it: two nodes (one removed), readings, a bundle."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for migrate in schema.MIGRATIONS[:3]:
            migrate(conn)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (3)")
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at, interval_s, fw_running)"
                     " VALUES ('porch', 'hash-1', 1, 2, 900, 'v1')")
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at, removed_at) VALUES ('gone', NULL, 1, 5)")
        conn.execute("INSERT INTO readings VALUES (1, 1, 10, 21.5, 40.0), (2, 2, 11, 9.0, 90.0), (3, 1, 20, 22.0, 41.0)")
        conn.execute("INSERT INTO bundles VALUES ('v1', 3)")
        conn.execute("INSERT INTO meta VALUES ('forward_cursor', '1')")


def test_a_version_3_journal_gains_the_telemetry_and_keeps_its_readings(postgres):
    url = postgres.new_database()
    _at_version_3(url)
    with PostgresStorage(url) as storage:
        assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)] and schema.SCHEMA_VERSION >= 4
        assert [r for batch in storage.iter_readings(with_extra=True, with_id=True) for r in batch] == [
            (10, "porch", 21.5, 40.0, None, None, None, None, 1), (11, "gone", 9.0, 90.0, None, None, None, None, 2),
            (20, "porch", 22.0, 41.0, None, None, None, None, 3),
        ]
        [porch] = storage.list_nodes()
        assert (porch.last_ts, porch.firmware.running, porch.last_vbat) == (20, "v1", None)
        assert storage.forward_cursor() == 1 and storage.count_outbox(1) == 2

        async def write():
            writer = storage.writer()
            await writer.start()
            try:
                return [await writer.append(1, 1.0, 2.0, extra=ReadingExtra(3.3, -70, 900, 0), key=("b", 1)),
                        await writer.append(1, 1.0, 2.0, key=("b", 1))]
            finally:
                await writer.close()

        first, again = asyncio.run(write())
        assert isinstance(again, Duplicate) and again == first > 20 and storage.last_reading_id() == 4
        assert storage.list_nodes()[0].last_rssi == -70
    assert _sql(url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'readings_node_key'") == [
        ("CREATE UNIQUE INDEX readings_node_key ON public.readings USING btree (node_id, boot, seq) WHERE (seq IS NOT NULL)",)
    ]


def test_two_processes_upgrading_a_version_3_journal_at_once_both_open_it(postgres):
    url = postgres.new_database()
    _at_version_3(url)
    upgrade_at_once(url)
    assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    assert _sql(url, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'readings'"
                     " AND column_name IN ('vbat', 'rssi', 'awake_ms', 'lost', 'boot', 'seq')") == [(6,)]
    assert _sql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'readings_node_key'") == [(1,)]


# One process of two: appends every key of argv[3] (JSON) for node argv[2] once the test says go,
# all at once (batches of many), and prints each answer with whether it was a duplicate.
APPEND = """
import asyncio, json, sys
from tswarm.storage import Duplicate
from tswarm.storage.postgres import PostgresStorage

async def main():
    with PostgresStorage(sys.argv[1]) as storage:
        writer = storage.writer()
        await writer.start()
        sys.stdin.readline()
        answers = await asyncio.gather(*(writer.append(int(sys.argv[2]), 1.0, 2.0, key=(boot, seq))
                                         for boot, seq in json.loads(sys.argv[3])))
        await writer.close()
    print(json.dumps([[int(ts), isinstance(ts, Duplicate)] for ts in answers]))

asyncio.run(main())
"""


def test_one_key_sent_to_two_processes_at_once_is_stored_once(postgres):
    """Two writers of two processes, as two instances behind a load balancer that a node's retry
    reaches one after the other (or, here, both at once): each key is stored by one of them, and
    both answer it with the same time."""
    url = postgres.new_database()
    with PostgresStorage(url) as storage:
        storage.add_node("porch", "h")
        node_id = storage.node_auth("porch").id
    keys = [["boot", seq] for seq in range(300)]
    procs = [subprocess.Popen([sys.executable, "-c", APPEND, url, str(node_id), json.dumps(keys)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(1.5)  # both started and connected
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outs]
    first, second = (json.loads(out) for out, _ in outs)
    assert [ts for ts, _ in first] == [ts for ts, _ in second]  # the same time for each key, in both
    assert all(dup_a != dup_b for (_, dup_a), (_, dup_b) in zip(first, second))  # stored by exactly one
    assert _sql(url, "SELECT count(*), count(DISTINCT seq) FROM readings") == [(300, 300)]
