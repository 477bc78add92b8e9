"""The singleton lock (:meth:`Storage.singleton_lock`): who, of every process on one journal, forwards
and prunes. Both engines promise a lock that is held until released; PostgreSQL's is shared by
every connection to the database and let go by the database when the holder's session ends
(killed process, lost connection, ``pg_terminate_backend``), so those are tested on the real cluster."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

from tswarm.storage import SingletonLock, StorageUnavailable
from tswarm.storage.postgres import PostgresStorage
from tswarm.storage.postgres.lock import IDLE_SESSION_TIMEOUT_S, SINGLETON_LOCK


def test_a_lock_taken_is_held_until_released(storage):
    lock = storage.singleton_lock()
    assert isinstance(lock, SingletonLock)
    assert not lock.held()  # not taken yet
    assert lock.try_acquire() is True
    assert lock.held() and lock.try_acquire() is True  # asking again, held: still held
    lock.release()
    assert not lock.held()
    lock.release()  # again: nothing
    assert lock.try_acquire() is True  # and it can be taken again
    lock.release()


def test_the_lock_needs_none_of_the_storage_s_connections(open_engine):
    storage = open_engine()
    lock = storage.singleton_lock()
    storage.close()
    assert lock.try_acquire() and lock.held()
    lock.release()


# -- PostgreSQL: one lock for every connection to the database ----------------------------------------


@pytest.fixture
def two(postgres_url):
    """Two storages on one database, as two instances have."""
    with PostgresStorage(postgres_url) as a, PostgresStorage(postgres_url) as b:
        yield a, b


def _holders(url: str) -> list[int]:
    """Backend pids holding the singleton lock, as the database sees it."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            (SINGLETON_LOCK >> 32, SINGLETON_LOCK & 0xFFFFFFFF),
        )]


def test_of_two_storages_on_one_database_only_one_holds_the_lock(two, postgres_url):
    a, b = (s.singleton_lock() for s in two)
    assert a.try_acquire() is True
    assert b.try_acquire() is False and not b.held()
    assert b.try_acquire() is False  # asking again on its kept connection: still no
    assert len(_holders(postgres_url)) == 1
    a.release()
    assert b.try_acquire() is True and b.held()
    assert a.try_acquire() is False
    b.release()
    assert _holders(postgres_url) == []


def test_terminating_the_holder_s_session_frees_the_lock_and_the_holder_knows(two, postgres_url):
    a, b = (s.singleton_lock() for s in two)
    assert a.try_acquire()
    (pid,) = _holders(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()[0]
    assert b.try_acquire() is True  # the database let it go with the session
    assert a.held() is False  # the holder learns it on its next check
    assert a.try_acquire() is False  # and asking again reconnects, but b holds it now
    b.release()
    assert a.try_acquire() is True
    a.release()


HOLDER = """
import sys, time
from tswarm.storage.postgres import PostgresStorage
lock = PostgresStorage(sys.argv[1]).singleton_lock()
assert lock.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_frees_the_lock(two, postgres_url):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), postgres_url],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        lock = two[0].singleton_lock()
        assert lock.try_acquire() is False
        proc.send_signal(signal.SIGKILL)  # the process this test started
        proc.wait(30)
        deadline = time.monotonic() + 30  # the server notices the closed socket at once; against hanging
        while not lock.try_acquire():
            assert time.monotonic() < deadline, "the killed holder's lock was never let go"
            time.sleep(0.05)
        assert lock.held()
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_s_session_ends_itself_when_its_holder_stops_asking(two, postgres_url):
    """A holder whose machine vanished sends nothing more: the server ends its idle session after
    IDLE_SESSION_TIMEOUT_S (the leader asks every second), so the lock does not wait for TCP to give up."""
    a, b = (s.singleton_lock() for s in two)
    assert a.try_acquire()
    (pid,) = _holders(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the holder's session, as others see it
        assert conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (
            "tswarm singleton lock",)
    deadline = time.monotonic() + IDLE_SESSION_TIMEOUT_S + 30  # against hanging, not a timing assertion
    while not b.try_acquire():  # b keeps asking (so its own session stays busy); a asks nothing
        assert time.monotonic() < deadline, "the silent holder's session was never ended"
        time.sleep(0.2)
    assert a.held() is False
    b.release()


def test_an_unreachable_database_is_storage_unavailable_without_the_password(postgres_factory):
    server = postgres_factory()
    url = server.new_database()
    with PostgresStorage(url) as storage:
        lock = storage.singleton_lock()
        assert lock.try_acquire()
        server.stop()
        assert lock.held() is False
        with pytest.raises(StorageUnavailable) as err:
            lock.try_acquire()
        assert server.PASSWORD not in str(err.value) and "***" in str(err.value)
        server.start()
        assert lock.try_acquire() is True  # back: taken again, on a new connection
        lock.release()
