"""The leader loop (service/leader.py): duties run while the journal's singleton lock is held, stop at
once when it is lost, and start again in whichever process takes the lock next.

Real locks on both engines (SQLite's data dir lock, PostgreSQL's advisory lock on the session's
cluster or a private one that the test stops, pauses or whose sessions it ends); the duties are
small recorders, since what they are (the forwarder, the pruner) is tested in their own files."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import psycopg
import pytest

from tests.servers import unavailable_here
from tswarm.leader import Leader
from tswarm.storage.postgres import PostgresStorage
from tswarm.storage.sqlite import SqliteStorage

from tests.storage.test_lock import _holders

FAST = {"check_s": 0.05, "answer_s": 0.5}


class Duty:
    """An async context manager factory that records when it runs; ``yields`` what it gives the leader."""

    def __init__(self, name: str, events: list):
        self.name, self.events, self.active = name, events, False

    @contextlib.asynccontextmanager
    async def __call__(self):
        self.events.append(("start", self.name))
        self.active = True
        try:
            yield self
        finally:
            self.active = False
            self.events.append(("stop", self.name))


async def until(predicate, what: str, timeout: float = 30):
    """Wait until ``predicate()`` holds (a deadline against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


def leader_of(storage, events, label="", **kw) -> tuple[Leader, Duty, Duty]:
    forwarder, pruner = Duty(f"forwarder{label}", events), Duty(f"pruner{label}", events)
    leader = Leader(storage.singleton_lock, [("forwarder", forwarder), ("pruner", pruner)], **{**FAST, **kw})
    return leader, forwarder, pruner


async def test_on_sqlite_the_duties_run_from_the_start_in_order_and_stop_in_reverse(tmp_path):
    events: list = []
    with SqliteStorage.open(tmp_path / "data") as storage:
        leader, forwarder, _ = leader_of(storage, events)
        await leader.start()
        assert leader.leading and leader.running == {"forwarder": forwarder, "pruner": leader.running["pruner"]}
        assert events == [("start", "forwarder"), ("start", "pruner")]
        await asyncio.sleep(0.3)  # a few checks: the lock stays held, nothing restarts
        assert events == [("start", "forwarder"), ("start", "pruner")]
        await leader.close()
    assert not leader.leading and leader.running == {}
    assert events[2:] == [("stop", "pruner"), ("stop", "forwarder")]


@pytest.fixture
async def two_on_one_database(postgres_url):
    """Two leaders on one database, as two instances have; both closed after."""
    events: list = []
    storages = [PostgresStorage(postgres_url), PostgresStorage(postgres_url)]
    leaders = [leader_of(s, events, label) for s, label in zip(storages, "ab")]
    yield leaders, events
    for leader, _, _ in leaders:
        await leader.close()
    for storage in storages:
        storage.close()


async def test_of_two_leaders_on_one_database_exactly_one_runs_the_duties(two_on_one_database, postgres_url):
    ((a, fa, _), (b, fb, _)), events = two_on_one_database
    await a.start()
    await b.start()
    assert a.leading and not b.leading
    await asyncio.sleep(0.3)  # b keeps asking, a keeps checking: nothing changes hands
    assert a.leading and not b.leading and fa.active and not fb.active
    assert events == [("start", "forwardera"), ("start", "prunera")]
    assert len(_holders(postgres_url)) == 1


async def test_when_the_holder_s_session_ends_it_stops_and_the_other_takes_over(two_on_one_database, postgres_url):
    ((a, fa, _), (b, fb, _)), events = two_on_one_database
    await a.start()
    await b.start()
    (pid,) = _holders(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
    await until(lambda: b.leading, "b to take over")
    await until(lambda: not a.leading, "a to step down")
    assert not fa.active and fb.active
    assert sorted(events[2:]) == sorted([("stop", "prunera"), ("stop", "forwardera"),
                                         ("start", "forwarderb"), ("start", "prunerb")])
    assert len(_holders(postgres_url)) == 1
    # a asks again every check, and leads again once b lets go
    await b.close()
    await until(lambda: a.leading, "a to lead again")
    assert fa.active and not fb.active


def _backends_of(url: str, application_name: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (application_name,))]


async def test_a_check_the_database_does_not_answer_stops_the_duties_at_once(postgres_url, caplog):
    """The holder's backend is paused (SIGSTOP, as root: it runs as the postgres user): the check gets
    no answer, so the duties stop after ``answer_s`` while the database still thinks the lock held;
    once the backend goes on, the old session is let go and the leader takes the lock again."""
    if os.geteuid() != 0:
        unavailable_here("pausing a PostgreSQL backend needs root (it runs as the postgres user)")
    events: list = []
    with PostgresStorage(postgres_url) as storage:
        leader, forwarder, _ = leader_of(storage, events)
        await leader.start()
        (pid,) = _holders(postgres_url)
        os.kill(pid, signal.SIGSTOP)
        try:
            with caplog.at_level(logging.WARNING, "tswarm.leader"):
                await until(lambda: not leader.leading, "the leader to step down")
            assert not forwarder.active and events[-2:] == [("stop", "pruner"), ("stop", "forwarder")]
            assert "did not answer the lock's check within 0.5 s: stopping the forwarder and the pruner" in caplog.text
            assert _holders(postgres_url) == [pid]  # the database would not have given it to anyone yet
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(lambda: leader.leading, "the leader to take the lock again")
        assert forwarder.active and _holders(postgres_url) != [pid]
        await leader.close()


async def test_a_database_away_is_asked_again_until_it_returns(postgres_factory, caplog):
    server = postgres_factory()
    url = server.new_database()
    events: list = []
    with PostgresStorage(url) as storage:
        leader, forwarder, _ = leader_of(storage, events)
        await leader.start()
        assert leader.leading
        server.stop()
        await until(lambda: not leader.leading, "the leader to step down")
        assert not forwarder.active
        with caplog.at_level(logging.WARNING, "tswarm.leader"):
            await asyncio.sleep(0.5)  # several tries while it is away: one line, not one per try
        assert caplog.text.count("cannot ask for the singleton lock") == 1
        assert server.PASSWORD not in caplog.text
        server.start()
        await until(lambda: leader.leading, "the leader to lead again")
        assert forwarder.active
        await leader.close()
    assert events == [("start", "forwarder"), ("start", "pruner"), ("stop", "pruner"), ("stop", "forwarder")] * 2


async def test_a_database_away_at_start_is_no_error_and_nobody_leads(postgres_factory):
    server = postgres_factory()
    url = server.new_database()
    events: list = []
    with PostgresStorage(url) as storage:
        server.stop()
        leader, _, _ = leader_of(storage, events)
        await leader.start()
        assert not leader.leading and events == []
        server.start()
        await until(lambda: leader.leading, "the leader to lead")
        await leader.close()


async def test_a_duty_that_cannot_start_lets_the_lock_go(postgres_url):
    events: list = []

    @contextlib.asynccontextmanager
    async def broken():
        raise RuntimeError("no InfluxDB target")
        yield

    with PostgresStorage(postgres_url) as a, PostgresStorage(postgres_url) as b:
        forwarder = Duty("forwarder", events)
        first = Leader(a.singleton_lock, [("forwarder", forwarder), ("pruner", broken)], **FAST)
        await first.start()
        assert not first.leading and events == [("start", "forwarder"), ("stop", "forwarder")]
        other, _, _ = leader_of(b, events, "b")
        await until(lambda: _holders(a._url) == [], "the lock let go")  # released in the lock's own thread
        await first.close()
        await other.start()
        assert other.leading
        await other.close()


class _RestartingDatabase:
    """A lock whose database is restarting: each try fails with another reason (refused, starting up),
    as PostgreSQL's do while it comes back, then it answers. A stand-in: what is tested is the leader's
    logging of the failures, which no real server makes vary on cue."""

    def __init__(self, reasons):
        self.reasons = reasons  # the database's: shared by every lock the leader makes on it

    def try_acquire(self) -> bool:
        reason = next(self.reasons)
        if reason is not None:
            from tswarm.storage import StorageUnavailable

            raise StorageUnavailable(reason)
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


async def test_an_outage_whose_reason_changes_is_one_line_not_one_per_reason(caplog):
    events: list = []
    reasons = iter(["connection refused", "the database system is starting up", "connection refused", None])
    leader = Leader(lambda: _RestartingDatabase(reasons), [("forwarder", Duty("forwarder", events))], **FAST)
    with caplog.at_level(logging.WARNING, "tswarm.leader"):
        await leader.start()
        await until(lambda: leader.leading, "the leader to lead once the database answers")
        await leader.close()
    assert caplog.text.count("cannot ask for the singleton lock") == 1, caplog.text
    assert events[0] == ("start", "forwarder")
