"""The PostgreSQL engine's cache of nodes' records (service/storage/postgres/cache.py), on the real
cluster of tests/servers.py.

Whatever changes the registry, wherever (``tswarm`` commands in another process, plain SQL on
another connection), the cached process's next lookup sees it once the change's notification has
arrived: a short poll (:data:`WITHIN_S`), a bound on correctness, not a measure of speed. The cache
serves only while its listener listens (its session ended, the server restarted: every lookup reads
the database until it is back). Schema version 2 brings the triggers to a version-1 journal, once
when two processes upgrade it together.

That the cache serves at all is shown by a change no trigger announces (:func:`silently`: the
triggers disabled for one transaction): a lookup served from the cache does not see it, one that
reads the database does. The listener's reconnection is held back in one test by replacing its
connect function (nothing else can keep a superuser's session out of the test cluster); the
states of the cache (``listening``, the records it holds) are read from the object itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Callable

import psycopg
import pytest

from tswarm.storage import StorageUnavailable
from tswarm.storage.postgres import PostgresStorage, PostgresWriter, schema
from tswarm.storage.postgres.cache import APPLICATION_NAME, RegistryCache

from ..servers import run_cli, tswarm_env

WITHIN_S = 1.0  # a change is seen by the next lookup after at most this (a bound on correctness)
UP_S = 10.0  # the listener connects (again) within this


@pytest.fixture
def pg(postgres_url):
    with PostgresStorage(postgres_url) as storage:
        storage.add_node("porch", "hash-1")
        yield storage


def _sql(url: str, statement: str, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def silently(url: str, statement: str, params=()) -> None:
    """``statement`` in a transaction with the journal's triggers off: a change no one is told of."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE nodes DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE meta DISABLE TRIGGER USER")
        conn.execute(statement, params)
        conn.execute("ALTER TABLE nodes ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE meta ENABLE TRIGGER USER")


def eventually(check: Callable[[], bool], within: float = WITHIN_S) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def listening(storage: PostgresStorage) -> RegistryCache:
    """The storage's cache once its listener listens (a first lookup takes it)."""
    storage.node_auth("porch")
    cache = storage._registry_cache
    assert cache is not None and eventually(lambda: cache.listening, UP_S)
    return cache


def cached(storage: PostgresStorage, name: str = "porch") -> RegistryCache:
    """The storage's cache, listening and holding ``name``'s record. The notification of a change
    made just before may still wait unread on the listener's socket, and until it is read every
    lookup reads the database (service/storage/postgres/cache.py), so this waits until a lookup is
    answered from the cache: the same record twice."""
    cache = listening(storage)

    def held() -> bool:
        record = storage.node_auth(name)
        return record is not None and storage.node_auth(name) is record and cache._records.get(name) is record

    assert eventually(held), "the second lookup never came from the cache"
    return cache


def cli(tmp_path, url: str, *args: str) -> None:
    """A ``tswarm`` command in a process of its own, on the same database."""
    run_cli(tmp_path / "cli", *args, env=tswarm_env(tmp_path / "cli", TSWARM_DATABASE_URL=url))


def test_a_lookup_is_served_from_the_cache_while_the_listener_listens(pg, postgres_url):
    cache = cached(pg)
    silently(postgres_url, "UPDATE nodes SET password_hash = 'hash-unannounced'")
    assert pg.node_auth("porch").password_hash == "hash-1"  # from the cache: nothing said it changed
    assert pg._read_node_auth("porch").password_hash == "hash-unannounced"
    with PostgresStorage(postgres_url) as other:  # every storage of the process shares the one cache
        assert other.node_auth("porch").password_hash == "hash-1" and other._registry_cache is cache
    with pg.snapshot():  # inside a snapshot, the snapshot's view
        assert pg.node_auth("porch").password_hash == "hash-unannounced"


def test_a_change_this_process_commits_is_seen_at_once_without_its_notification(pg, postgres_url):
    """The admin API, or a CLI command run in the server's process: the process's own change clears its
    cache when it commits. The triggers are off here, so no notification could have done it."""
    cache = cached(pg)
    _sql(postgres_url, "ALTER TABLE nodes DISABLE TRIGGER USER")
    _sql(postgres_url, "ALTER TABLE meta DISABLE TRIGGER USER")
    try:
        with PostgresStorage(postgres_url) as other:
            other.set_password("porch", "hash-2")
            assert pg.node_auth("porch").password_hash == "hash-2" and other._registry_cache is None
            other.set_halt(None, True)
            assert pg.node_auth("porch").halted
            other.add_bundle("v1", [("node.py", b"pass\n")], 1)
            other.stage_bundle("v1", ["porch"], 2)
            assert pg.node_auth("porch").fw_staged == "v1"
            other.report_firmware("porch", "v1", None, 3)
            assert pg.node_auth("porch").fw_running == "v1"
            other.remove_node("porch")
            assert pg.node_auth("porch") is None
            other.add_node("porch", "hash-3")
            assert pg.node_auth("porch").password_hash == "hash-3"
        assert cache.listening  # the listener goes on
    finally:
        _sql(postgres_url, "ALTER TABLE nodes ENABLE TRIGGER USER")
        _sql(postgres_url, "ALTER TABLE meta ENABLE TRIGGER USER")


# Each change: (what a user does, in another process or on another connection; what the cached
# process's next lookup of "porch" must then say).
CHANGES = {
    "password (tswarm node passwd)": (
        lambda tmp, url: cli(tmp, url, "node", "passwd", "porch", "--password", "pw-new-" + "x" * 8),
        lambda auth: auth is not None and auth.password_hash != "hash-1",
    ),
    "removed (tswarm node remove)": (
        lambda tmp, url: cli(tmp, url, "node", "remove", "porch"),
        lambda auth: auth is None,
    ),
    "halted (tswarm halt NAME)": (
        lambda tmp, url: cli(tmp, url, "halt", "porch"),
        lambda auth: auth.halted,
    ),
    "every node halted (tswarm halt)": (
        lambda tmp, url: cli(tmp, url, "halt"),
        lambda auth: auth.halted,
    ),
    "created (its first POST, SQL)": (
        lambda tmp, url: _sql(url, "UPDATE nodes SET created_at = 1 WHERE name = 'porch'"),
        lambda auth: auth.created,
    ),
    "password (SQL)": (
        lambda tmp, url: _sql(url, "UPDATE nodes SET password_hash = 'hash-2' WHERE name = 'porch'"),
        lambda auth: auth.password_hash == "hash-2",
    ),
    "deleted (SQL)": (
        lambda tmp, url: _sql(url, "DELETE FROM nodes WHERE name = 'porch'"),
        lambda auth: auth is None,
    ),
    "every node halted (SQL)": (
        lambda tmp, url: _sql(url, "INSERT INTO meta VALUES ('halt_all', '1')"),
        lambda auth: auth.halted,
    ),
    "nodes emptied (TRUNCATE)": (
        lambda tmp, url: _sql(url, "TRUNCATE nodes"),
        lambda auth: auth is None,
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_made_elsewhere_is_seen_by_the_next_lookup(pg, postgres_url, tmp_path, change):
    make, then = CHANGES[change]
    cached(pg)
    make(tmp_path, postgres_url)
    assert eventually(lambda: then(pg.node_auth("porch"))), pg.node_auth("porch")


def test_a_resume_and_the_end_of_a_halt_of_every_node_are_seen(pg, postgres_url, tmp_path):
    cli(tmp_path, postgres_url, "halt", "porch")
    cli(tmp_path, postgres_url, "halt")
    assert eventually(lambda: pg.node_auth("porch").halted)
    cached(pg)
    cli(tmp_path, postgres_url, "resume", "porch")  # the node's own halt ends; every node's goes on
    _sql(postgres_url, "UPDATE meta SET value = '1' WHERE key = 'halt_all'")  # says nothing: no change
    assert pg._read_node_auth("porch").halted and pg.node_auth("porch").halted
    cli(tmp_path, postgres_url, "resume")
    assert eventually(lambda: not pg.node_auth("porch").halted)
    cached(pg)
    cli(tmp_path, postgres_url, "halt")
    assert eventually(lambda: pg.node_auth("porch").halted)


def test_a_node_added_elsewhere_is_accepted_on_its_next_request(pg, postgres_url, tmp_path):
    """Unknown names are not cached: a node unknown a moment ago is found once it is added."""
    cached(pg)
    assert pg.node_auth("attic") is None and pg.node_auth("attic") is None
    cli(tmp_path, postgres_url, "node", "add", "attic", "--password", "pw-attic-" + "x" * 8)
    assert pg.node_auth("attic").name == "attic"  # at once: no notification needed


def test_the_writer_marking_a_node_created_clears_the_cache_and_later_posts_do_not(pg, postgres_url):
    """A node's first POST changes its record (a PUT is then accepted): its notification clears the
    cache. The writer's same statement with every later POST changes no row and says nothing."""
    import asyncio

    node_id = pg.node_auth("porch").id
    cache = cached(pg)
    assert not pg.node_auth("porch").created

    async def post() -> None:
        writer = PostgresWriter(postgres_url)
        await writer.start()
        try:
            await writer.append(node_id, 20.0, 50.0, create=True)
        finally:
            await writer.close()

    asyncio.run(post())
    assert eventually(lambda: pg.node_auth("porch").created)
    cached(pg)
    generation = cache._generation
    asyncio.run(post())  # created already: no row changes
    time.sleep(0.2)  # what a notification would need to arrive (none must)
    assert cache._generation == generation and "porch" in cache._records


def test_an_interval_is_not_part_of_a_record_and_is_read_fresh(pg, postgres_url, tmp_path):
    cached(pg)
    cli(tmp_path, postgres_url, "node", "interval", "porch", "900")
    assert [n.interval_s for n in pg.list_nodes()] == [900]


def test_the_forward_cursor_moving_says_nothing(pg, postgres_url):
    cache = cached(pg)
    generation = cache._generation
    for value in range(5):
        _sql(postgres_url, "INSERT INTO meta VALUES ('forward_cursor', %s) ON CONFLICT (key) DO UPDATE"
             " SET value = excluded.value", (str(value),))
    _sql(postgres_url, "UPDATE nodes SET interval_s = interval_s")  # changes nothing: says nothing
    time.sleep(0.2)
    assert cache._generation == generation and "porch" in cache._records


def test_a_lookup_that_read_before_a_change_does_not_keep_its_record_after_the_clear(pg, postgres_url):
    """The race the generation closes: a lookup reads the old record, the change's notification
    clears the cache, then the lookup would store what it read."""
    cache = listening(pg)
    read, go_on = threading.Event(), threading.Event()

    def slow_fetch(name):
        record = pg._read_node_auth(name)
        read.set()
        go_on.wait(10)
        return record

    result = []
    lookup = threading.Thread(target=lambda: result.append(cache.lookup("porch", slow_fetch)))
    lookup.start()
    assert read.wait(10)
    generation = cache._generation
    _sql(postgres_url, "UPDATE nodes SET password_hash = 'hash-2'")
    assert eventually(lambda: cache._generation > generation)  # the notification cleared the cache
    go_on.set()
    lookup.join(10)
    assert result[0].password_hash == "hash-1"  # what it read, returned...
    assert "porch" not in cache._records  # ...but not kept
    assert pg.node_auth("porch").password_hash == "hash-2"


def _listener_sessions(url: str) -> list[int]:
    return [pid for (pid,) in _sql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                   (APPLICATION_NAME,))]


def test_the_listener_ended_by_the_server_bypasses_the_cache_until_it_listens_again(pg, postgres_url, monkeypatch):
    cache = cached(pg)
    (first,) = _listener_sessions(postgres_url)
    held_back = threading.Event()
    held_back.set()
    connect = cache._connect

    def refused():
        if held_back.is_set():
            raise psycopg.OperationalError("held back by the test")
        return connect()

    monkeypatch.setattr(cache, "_connect", refused)
    _sql(postgres_url, "SELECT pg_terminate_backend(%s)", (first,))
    assert eventually(lambda: not cache.listening, UP_S)
    assert cache._records == {}
    silently(postgres_url, "UPDATE nodes SET password_hash = 'hash-while-away'")
    assert pg.node_auth("porch").password_hash == "hash-while-away"  # at once: read from the database
    silently(postgres_url, "UPDATE nodes SET password_hash = 'hash-still-away'")
    assert pg.node_auth("porch").password_hash == "hash-still-away" and cache._records == {}  # nothing kept

    held_back.clear()
    assert eventually(lambda: cache.listening, UP_S)
    assert _listener_sessions(postgres_url) not in ([], [first])
    cached(pg)
    silently(postgres_url, "UPDATE nodes SET password_hash = 'hash-unannounced'")
    assert pg.node_auth("porch").password_hash == "hash-still-away"  # the cache serves again
    _sql(postgres_url, "UPDATE nodes SET password_hash = 'hash-3'")
    assert eventually(lambda: pg.node_auth("porch").password_hash == "hash-3")


def test_a_change_made_while_the_listener_is_away_is_seen_when_it_is_back(pg, postgres_url):
    """Without holding it back: its session ended, a change at once (its notification told no
    one, or told the listener already back); the next lookups see it either way."""
    cached(pg)
    (first,) = _listener_sessions(postgres_url)
    _sql(postgres_url, "SELECT pg_terminate_backend(%s)", (first,))
    _sql(postgres_url, "UPDATE nodes SET password_hash = 'hash-2'")
    assert eventually(lambda: pg.node_auth("porch").password_hash == "hash-2")
    assert eventually(lambda: pg._registry_cache.listening and _listener_sessions(postgres_url) != [first], UP_S)
    assert pg.node_auth("porch").password_hash == "hash-2"


def test_after_a_restart_of_the_server_changes_are_seen_and_the_cache_serves_again(postgres_factory):
    server = postgres_factory()
    url = server.new_database()
    with PostgresStorage(url) as storage:
        storage.add_node("porch", "hash-1")
        cache = cached(storage)
        server.stop()
        with pytest.raises(StorageUnavailable):
            storage.node_auth("porch")  # not from the cache: the listener is gone with the server
        assert not cache.listening
        server.start()
        _sql(url, "UPDATE nodes SET password_hash = 'hash-2'")  # before or after the listener is back
        assert eventually(lambda: storage.node_auth("porch").password_hash == "hash-2", UP_S)
        assert eventually(lambda: cache.listening, UP_S)
        cached(storage)
        silently(url, "UPDATE nodes SET password_hash = 'hash-unannounced'")
        assert storage.node_auth("porch").password_hash == "hash-2"  # served from the cache again


def test_the_cache_closes_with_the_last_storage_that_used_it(postgres_url):
    one, two = PostgresStorage(postgres_url), PostgresStorage(postgres_url)
    one.add_node("porch", "hash-1")
    cache = listening(one)
    two.node_auth("porch")
    assert two._registry_cache is cache and _listener_sessions(postgres_url)
    one.close()
    one.close()  # twice is once
    assert cache.listening and two.node_auth("porch").name == "porch"
    two.close()
    assert not cache._thread.is_alive() and not cache.listening
    assert eventually(lambda: _listener_sessions(postgres_url) == [], UP_S)
    with PostgresStorage(postgres_url) as again:
        assert listening(again) is not cache


def test_a_forked_process_makes_its_own_cache_and_never_serves_the_parents(pg, postgres_url):
    cache = cached(pg)
    parents = _listener_sessions(postgres_url)
    silently(postgres_url, "UPDATE nodes SET password_hash = 'hash-unannounced'")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the inherited storage reads the database; a new one has its own cache
        code = 1
        try:
            with PostgresStorage(postgres_url) as mine:
                inherited = cache.lookup("porch", mine._read_node_auth)  # the parent's cache: not served
                own = listening(mine)
                result = [inherited.password_hash, own is not cache, mine.node_auth("porch").password_hash]
            pg.close()  # inherited: must not close the parent's cache nor its listener's socket
            os.write(write, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    result = json.loads(os.read(read, 1000))
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == ["hash-unannounced", True, "hash-unannounced"]
    assert cache.listening and _listener_sessions(postgres_url) == parents  # the parent's listener lives on
    assert pg.node_auth("porch").password_hash == "hash-1"  # and its cache still serves
    _sql(postgres_url, "UPDATE nodes SET password_hash = 'hash-2'")
    assert eventually(lambda: pg.node_auth("porch").password_hash == "hash-2")


# -- schema version 2: the triggers -----------------------------------------------------------------


def _at_version_1(url: str) -> None:
    """A journal as version 1 of the schema made it (its migration, frozen as MIGRATIONS[0]), with a node."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        schema.MIGRATIONS[0](conn)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at) VALUES ('porch', 'hash-1', 1)")


def _triggers(url: str) -> list[tuple[str, str]]:
    return sorted(_sql(url, "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal"))


def test_a_version_1_journal_is_upgraded_with_the_triggers(postgres):
    url = postgres.new_database()
    _at_version_1(url)
    assert _triggers(url) == []
    with PostgresStorage(url) as storage:
        assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]  # 2 and later
        assert {table for table, _ in _triggers(url)} == {"meta", "nodes"}
        cached(storage)
        _sql(url, "UPDATE nodes SET password_hash = 'hash-2'")
        assert eventually(lambda: storage.node_auth("porch").password_hash == "hash-2")


UPGRADE = """
import sys
from tswarm.storage.postgres import PostgresStorage
print("ready", flush=True)  # Python and tswarm imported
sys.stdin.readline()  # the go of the test: both open at once
PostgresStorage(sys.argv[1]).close()
"""


def upgrade_at_once(url: str, processes: int = 2) -> None:
    """Open the journal at ``url`` from ``processes`` processes at the same moment (each started and
    ready before any is told to go): each must open it, so the upgrade ran once, safely."""
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADE, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=60)[1]
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * processes, errors


def test_two_processes_upgrading_a_version_1_journal_at_once_both_open_it(postgres):
    url = postgres.new_database()
    _at_version_1(url)
    upgrade_at_once(url)
    assert _sql(url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    triggers = _triggers(url)
    assert len(triggers) == len(set(triggers)) == len([s for s in schema.TRIGGERS_V2 if "CREATE TRIGGER" in s])


def test_behind_a_pooler_the_cache_is_never_used(postgres_url, monkeypatch, caplog):
    """A pooler answers ``pg_backend_pid()`` from a server session other than the one its connection
    announced. No pooler runs here: the announced PID is replaced (a mock) to stand for one."""
    monkeypatch.setattr(psycopg.ConnectionInfo, "backend_pid", property(lambda info: -1))
    with PostgresStorage(postgres_url) as storage:
        storage.add_node("porch", "hash-1")
        storage.node_auth("porch")
        cache = storage._registry_cache
        cache._thread.join(UP_S)
        assert not cache._thread.is_alive() and not cache.listening
        silently(postgres_url, "UPDATE nodes SET password_hash = 'hash-unannounced'")
        assert storage.node_auth("porch").password_hash == "hash-unannounced"  # read from the database
    assert "goes through a pooler" in caplog.text and _listener_sessions(postgres_url) == []
