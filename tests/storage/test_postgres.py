"""The PostgreSQL engine's own mechanics, on the real cluster of tests/servers.py: its schema version
and the one migration of instances starting together, timestamps across writers, a server that
stops and comes back, and the URL's password kept out of every message. (What both engines promise
is tested once for both, in the other files of tests/storage.)"""
from __future__ import annotations

import asyncio
import inspect
import logging
import threading

import psycopg
import pytest
from click.testing import CliRunner

from tswarm.cli import cli
from tswarm.storage import Storage, StorageError, StorageUnavailable, StorageUnusable, Writer, open_storage
from tswarm.storage.postgres import PostgresStorage, PostgresWriter, schema
from tswarm.storage.postgres.connection import connect, redact, scrub
from tswarm.storage.postgres.meta import get_meta, put_meta
from tswarm.storage.postgres.schema import MIGRATION_LOCK, SCHEMA_VERSION

from ..servers import free_port
from .conftest import add_nodes

FUTURE = 4_000_000_000 * 10**9  # a reading in the future stands for a clock that stepped back


@pytest.fixture
def pg(postgres_url):
    with PostgresStorage(postgres_url) as storage:
        yield storage


def _sql(url: str, statement: str, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def _public(cls) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_the_postgres_engine_adds_no_operation_the_interface_does_not_name():
    assert _public(PostgresStorage) - _public(Storage) == set()
    assert _public(PostgresWriter) - _public(Writer) == set()
    assert not PostgresStorage.__abstractmethods__ and not PostgresWriter.__abstractmethods__


def test_open_storage_with_a_url_is_postgres_and_without_is_sqlite(postgres_url, tmp_path):
    with open_storage(tmp_path / "data", postgres_url) as storage:
        assert isinstance(storage, PostgresStorage)
    assert not (tmp_path / "data").exists()  # nothing in the data dir
    with open_storage(tmp_path / "data") as storage:
        assert not isinstance(storage, PostgresStorage)


def test_every_range_query_is_built_by_one_where_builder():
    from tswarm.storage.postgres.reads import where

    assert where() == ("TRUE", [])
    assert where(after_id=3, start_ns=10, stop_ns=20) == ("readings.id > %s AND readings.ts >= %s AND readings.ts < %s", [3, 10, 20])
    assert where(after=(5, 7), node_id=2, table="r") == ("r.ts >= %s AND (r.ts > %s OR r.id > %s) AND r.node_id = %s", [5, 5, 7, 2])


def test_never_backwards_keeps_the_larger_integer(pg):
    with pg.pool.connection() as conn:
        put_meta(conn, "cursor", "10", never_backwards=True)
        put_meta(conn, "cursor", "9", never_backwards=True)
        assert get_meta(conn, "cursor") == "10"
        put_meta(conn, "cursor", "100", never_backwards=True)  # compared as numbers, not text
        assert get_meta(conn, "cursor") == "100"
        put_meta(conn, "cursor", "5")
        assert get_meta(conn, "cursor") == "5"


def test_a_reading_whose_node_row_is_gone_is_named_by_its_id(pg, postgres_url):
    add_nodes(pg, "kitchen")
    pg.add_readings([("kitchen", 1, 20.0, 50.0)])
    _sql(postgres_url, "INSERT INTO readings VALUES (2, 999, 2, 21.0, 51.0)")
    assert [(r.node, r.ts) for r in pg.outbox_readings(0, 10)] == [("kitchen", 1), ("#999", 2)]
    assert [r[1] for b in pg.iter_readings() for r in b] == ["kitchen", "#999"]


def test_names_sort_by_bytes_whatever_the_locale(pg):
    add_nodes(pg, "b", "B", "a", "_x")
    assert [n.name for n in pg.list_nodes()] == ["B", "_x", "a", "b"]  # as SQLite sorts them


def test_commits_are_synchronous(pg):
    async def run():
        writer = pg.writer()
        await writer.start()
        try:
            return writer._conn.execute("SHOW synchronous_commit").fetchone()[0]
        finally:
            await writer.close()

    assert asyncio.run(run()) == "on"
    with pg.pool.connection() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


# -- schema: version, one migration, newer refused ---------------------------------------------------


def test_a_new_database_gets_the_current_version(pg, postgres_url):
    assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_opening_a_current_journal_takes_no_lock(pg, postgres_url):
    """Another session holds the migration lock: a journal already current opens without waiting."""
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        PostgresStorage(postgres_url).close()


def test_several_opening_a_new_database_at_once_migrate_it_once(postgres_url, monkeypatch):
    runs = []
    first = schema.MIGRATIONS[0]

    def counted(conn):
        runs.append(threading.get_ident())
        first(conn)

    monkeypatch.setattr(schema, "MIGRATIONS", (counted,))
    barrier = threading.Barrier(6)
    errors = []

    def open_one():
        barrier.wait()
        try:
            PostgresStorage(postgres_url).close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(runs) == 1
    assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_journal_newer_than_this_tswarm_is_refused_in_one_line(pg, postgres_url, monkeypatch):
    _sql(postgres_url, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageUnusable) as refused:
        PostgresStorage(postgres_url)
    message = str(refused.value)
    assert message == (
        f"journal {pg.where} has schema version {SCHEMA_VERSION + 1}, newer than this tswarm knows"
        f" ({SCHEMA_VERSION}); upgrade tswarm"
    )
    monkeypatch.setenv("TSWARM_DATABASE_URL", postgres_url)
    result = CliRunner().invoke(cli, ["node", "list"])
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"
    assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]  # left as it was


def test_commands_other_than_add_and_serve_want_a_journal_there(postgres, postgres_url, monkeypatch):
    monkeypatch.setenv("TSWARM_DATABASE_URL", postgres_url)
    result = CliRunner().invoke(cli, ["node", "list"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no journal in {postgres_url.replace(postgres.PASSWORD, '***')}: 'tswarm node add' or 'tswarm serve'"
        " creates it (is DATABASE_URL or TSWARM_DATABASE_URL right?)\n"
    )
    assert _sql(postgres_url, "SELECT to_regclass('schema_version')") == [(None,)]  # nothing created


def test_a_scheme_in_capitals_opens_the_journal_as_the_settings_accept_it(postgres, postgres_url):
    """``POSTGRES://`` passes the settings' check (a URL's scheme has no case), but libpq knows only the
    lower-case schemes: the pool, the writer, the lock and the registry listener all connect with it."""
    shouted = postgres_url.replace("postgresql://", "POSTGRES://")

    async def write(storage):
        writer = storage.writer()
        await writer.start()
        try:
            return await writer.append(storage.node_auth("a").id, 1.0, 1.0)
        finally:
            await writer.close()

    with PostgresStorage(shouted) as storage:
        add_nodes(storage, "a")
        assert asyncio.run(write(storage)) > 0
        lock = storage.singleton_lock()
        assert lock.try_acquire()
        lock.release()
        assert storage.where == f"postgres://postgres:***@127.0.0.1:{postgres.port}/{postgres_url.rsplit('/', 1)[1]}"
    with pytest.raises(StorageUnavailable) as refused:
        connect(shouted.replace(f":{postgres.port}/", f":{free_port()}/"))
    assert "Connection refused" in str(refused.value) and postgres.PASSWORD not in str(refused.value)


# -- timestamps across writers ---------------------------------------------------------------------


def test_two_writers_of_two_instances_never_repeat_a_timestamp(postgres_url):
    """Two threads, each with its own storage (its own pool), event loop and writer, as two instances
    would be; the clock seems to have stepped back (a reading in the future), so every stamp is
    the newest + 1 and only the database's lock keeps the two apart."""
    with PostgresStorage(postgres_url) as setup:
        ids = add_nodes(setup, "a", "b")
        setup.add_readings([("a", FUTURE, 0.0, 0.0)])
    barrier = threading.Barrier(2)
    stamps: dict[int, list[int]] = {}

    def instance(node_id: int) -> None:
        async def run():
            with PostgresStorage(postgres_url) as storage:
                writer = storage.writer(max_batch=7)
                await writer.start()
                barrier.wait()
                got = []
                for _ in range(20):
                    got += await asyncio.gather(*(writer.append(node_id, 1.0, 1.0) for _ in range(15)))
                await writer.close()
                return got

        try:
            stamps[node_id] = asyncio.run(run())
        except Exception as exc:  # noqa: BLE001 - asserted below
            stamps[node_id] = [exc]

    threads = [threading.Thread(target=instance, args=(node_id,)) for node_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = stamps[ids[0]] + stamps[ids[1]]
    assert not [s for s in everything if isinstance(s, Exception)]
    assert len(everything) == 600 and sorted(everything) == list(range(FUTURE + 1, FUTURE + 601))
    for node_id in ids:
        assert stamps[node_id] == sorted(stamps[node_id])
    by_id = _sql(postgres_url, "SELECT id, ts FROM readings ORDER BY id")
    assert [id_ for id_, _ in by_id] == list(range(1, 602))  # ids follow commit order, one by one
    assert [ts for _, ts in by_id] == sorted(ts for _, ts in by_id)


# -- the server goes away and comes back -------------------------------------------------------------


async def test_a_stopped_server_is_unavailable_and_the_same_objects_recover(postgres_factory, caplog):
    server = postgres_factory()
    url = server.new_database()
    caplog.set_level(logging.DEBUG)
    with PostgresStorage(url) as storage:
        (node_id,) = add_nodes(storage, "a")
        writer = storage.writer()
        await writer.start()
        first = await writer.append(node_id, 1.0, 1.0)

        await asyncio.to_thread(server.stop)
        with pytest.raises(StorageUnavailable) as refused:
            await writer.append(node_id, 2.0, 2.0)
        with pytest.raises(StorageUnavailable) as refused_too:
            await asyncio.to_thread(storage.node_auth, "a")

        await asyncio.to_thread(server.start)
        later = await writer.append(node_id, 3.0, 3.0)  # no restart of the writer or the storage
        assert later > first
        assert await asyncio.to_thread(lambda: [r[2] for b in storage.iter_readings() for r in b]) == [1.0, 3.0]

        await asyncio.to_thread(server.stop)  # a restart between two readings: nobody notices
        await asyncio.to_thread(server.start)
        assert await writer.append(node_id, 4.0, 4.0) > later
        assert (await asyncio.to_thread(storage.node_auth, "a")).id == node_id
        await writer.close()
    for error in (refused.value, refused_too.value):
        assert str(error).startswith(f"PostgreSQL at {url.replace(server.PASSWORD, '***')} is unavailable: ")
    assert server.PASSWORD not in caplog.text


# -- the password ------------------------------------------------------------------------------------


def test_the_password_is_in_no_repr_and_no_error(postgres, postgres_url):
    password = postgres.PASSWORD
    with PostgresStorage(postgres_url) as storage:
        assert password not in repr(storage) and password not in str(storage) and "***" in repr(storage)
        assert password not in repr(storage.writer())
        assert password not in repr(storage.pool)
    wrong = postgres_url.replace(password, "wrong-Pw-8812")
    with pytest.raises(StorageUnavailable) as refused:
        PostgresStorage(wrong)
    assert "wrong-Pw-8812" not in str(refused.value) and "password authentication failed" in str(refused.value)
    unreadable = postgres_url.replace(f":{postgres.port}/", ":notaport/")
    with pytest.raises(StorageError) as refused:
        PostgresStorage(unreadable)
    assert password not in str(refused.value) and "notaport" in str(refused.value)
    in_the_query = f"postgresql://postgres@127.0.0.1:{postgres.port}/nosuchdb?password={password}"
    with pytest.raises(StorageError) as refused:
        PostgresStorage(in_the_query)
    assert password not in str(refused.value) and "password=***" in str(refused.value)


@pytest.mark.parametrize("password", ["127", "p", "1", "0.0"])
def test_a_short_or_numeric_password_is_masked_in_the_url_and_nowhere_else(password):
    """The password is masked where the URL quotes it, not wherever its characters occur: ``127`` is
    also the start of 127.0.0.1, ``p`` a letter of ``postgres`` and ``port``. (libpq's own message of a
    refused connection, from a port nothing listens on.)"""
    port = free_port()
    with pytest.raises(StorageUnavailable) as refused:
        connect(f"postgres://tswarm:{password}@127.0.0.1:{port}/db")
    assert str(refused.value) == (
        f"PostgreSQL at postgres://tswarm:***@127.0.0.1:{port}/db is unavailable: connection failed:"
        f' connection to server at "127.0.0.1", port {port} failed: Connection refused'
    )


def test_a_port_that_is_no_number_is_quoted_as_it_is_whatever_the_password():
    with pytest.raises(StorageUnavailable) as refused:
        connect("postgres://u:p@127.0.0.1:notaport/db")
    assert str(refused.value) == (
        "PostgreSQL at postgres://u:***@127.0.0.1:notaport/db is unavailable: connection is bad:"
        ' invalid integer value "notaport" for connection option "port"'
    )


@pytest.mark.parametrize("url, message", [
    ("postgres://u:pw%zz-Kq7@127.0.0.1:1/db",
     'cannot use PostgreSQL at postgres://u:***@127.0.0.1:1/db: invalid percent-encoded token: "***"'),
    ("postgres://u@127.0.0.1:1/db?password=pw%zz-Kq7",
     'cannot use PostgreSQL at postgres://u@127.0.0.1:1/db?password=***: invalid percent-encoded token: "***"'),
    ("postgres://u:pw-Kq7 x@127.0.0.1:1/db",
     'cannot use PostgreSQL at postgres://u:***@127.0.0.1:1/db: unexpected spaces found in "***",'
     " use percent-encoded spaces (%20) instead"),
    ("postgres://u:pw-Kq7@[::1/db",
     'cannot use PostgreSQL at postgres://u:***@[::1/db: end of string reached when looking for matching "]"'
     ' in IPv6 host address in URI: "postgres://u:***@[::1/db"'),
], ids=["bad-escape", "bad-escape-in-the-query", "space", "unclosed-bracket"])
def test_a_url_libpq_cannot_read_is_one_line_that_masks_what_libpq_quotes_of_it(url, message):
    """libpq's complaints about a URL quote the part it could not read (the password itself) or the
    whole URL; both come out masked, as one line, and no traceback (a StorageUnusable: trying again
    would not help)."""
    with pytest.raises(StorageUnusable) as refused:
        connect(url)
    assert str(refused.value) == message
    assert "Kq7" not in str(refused.value)


def test_scrub_masks_a_password_keyword_as_libpq_writes_it_and_leaves_the_rest():
    """The keyword form of a connection string (``password=...``, quoted when it holds a space) is
    the other way a message can carry the password."""
    url = "postgres://u:p@127.0.0.1:5432/db"
    assert scrub("user=u password=p host=127.0.0.1 port=5432 dbname=db", url) == (
        "user=u password=*** host=127.0.0.1 port=5432 dbname=db"
    )
    spaced = "postgres://u:p%20w@h/db"
    assert scrub(r"user=u password='p w' host=h", spaced) == "user=u password=*** host=h"
    assert scrub(r"password = 'it\'s' host=h", spaced) == "password = *** host=h"


def test_a_percent_encoded_password_is_masked_as_written_decoded_and_encoded():
    """``p%40ss`` in the URL is ``p@ss`` to libpq: neither form may show, however a message quotes it."""
    url = "postgres://u:p%40ss-Kq7@127.0.0.1:1/db?sslmode=disable"
    text = f'at {url}: "p@ss-Kq7", \'p%40ss-Kq7\', password=p@ss-Kq7 host=h, password=p%40ss-Kq7&port=1'
    assert scrub(text, url) == (
        "at postgres://u:***@127.0.0.1:1/db?sslmode=disable: \"***\", '***', password=*** host=h, password=***&port=1"
    )


@pytest.mark.parametrize("password", ["pw/x-Kq7", "p@ss:w/rd?#&=-Kq7", "a/b@c/d-Kq7"])
def test_an_unencoded_password_with_a_slash_or_an_at_is_masked_whole(password):
    """Pasted without %-encoding (a provider's generated password holds ``/`` and ``+``), libpq reads
    the password's tail as the host, port or database and quotes it in its errors: the user part ends
    where the person meant it (the last ``@``), and everything up to there is masked."""
    url = f"postgres://u:{password}@127.0.0.1:1/db"
    assert redact(url) == "postgres://u:***@127.0.0.1:1/db"
    with pytest.raises(StorageError) as refused:
        connect(url)
    message = str(refused.value)
    assert "Kq7" not in message and "\n" not in message
    assert message.startswith("PostgreSQL at postgres://u:***@127.0.0.1:1/db is ") or message.startswith(
        "cannot use PostgreSQL at postgres://u:***@127.0.0.1:1/db: ")
    for piece in password.replace("@", "/").split("/"):  # nothing of it, whichever part libpq took it for
        assert len(piece) < 3 or piece not in message.replace("127.0.0.1:1/db", ""), (piece, message)


@pytest.mark.parametrize("url, shown", [
    ("postgres://u:p?x-Kq7@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"),  # libpq: the password is p?x-Kq7
    ("postgres://u:p#x-Kq7@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"),
    ("postgres://u@127.0.0.1:1/db?pass%77ord=Kq7&port=x", "postgres://u@127.0.0.1:1/db?pass%77ord=***&port=x"),
    ("postgres:///db?host=/tmp&password=Kq7", "postgres:///db?host=/tmp&password=***"),
    ("postgres://h?password=K@q7", "postgres://h?password=***"),  # libpq: user h?password=K, host q7
    ("postgres://", "postgres://"),
])
def test_redact_masks_the_password_as_libpq_reads_it_and_keeps_the_rest_as_written(url, shown):
    """libpq ends the user part at its first @ (not at a ? or #, as urlsplit does) and %-decodes the
    names of parameters: every reading is masked. A URL without a host keeps its //."""
    assert redact(url) == shown
    assert scrub(f"PostgreSQL at {url} is unavailable: port", url) == f"PostgreSQL at {shown} is unavailable: port"
