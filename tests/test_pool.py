"""The storage threads of a request (service/pool.py): each its own connection, reads apart from
writes, and the helpers the handlers' tests use to make a storage call wait."""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from tswarm.storage import DB_FILENAME, open_storage
from tswarm.storage.sqlite import SqliteStorage
from tswarm.pool import StoragePool


@contextlib.contextmanager
def write_lock_held(data_dir: Path):
    """Another connection holds the journal's write lock (``BEGIN IMMEDIATE``) for the block, as
    `tswarm node add` beside the server or another worker's commit does for a moment."""
    conn = sqlite3.connect(str(Path(data_dir) / DB_FILENAME), isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


class Held:
    """A journal method held at its start until :meth:`release` (or 10 s, the busy timeout, pass).

    A stand-in for a lock: in WAL mode no real lock makes a *read* wait (only a WAL recovery or a
    file system without shared memory would), so the read is held here; the method itself then runs
    for real. ``released`` records, per call, whether it went on because the test released it (True)
    or because the 10 s passed (False: nothing else could run meanwhile)."""

    def __init__(self, monkeypatch, method: str, engine: type = SqliteStorage):
        """``engine``: the storage class whose ``method`` is held (the test's engine)."""
        self.entered = threading.Event()
        self._release = threading.Event()
        self.released: list[bool] = []
        real = getattr(engine, method)

        def held(journal, *args, **kwargs):
            self.entered.set()
            self.released.append(self._release.wait(10))
            return real(journal, *args, **kwargs)

        monkeypatch.setattr(engine, method, held)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30), "the held method was never called"

    def release(self) -> None:
        self._release.set()


@pytest.fixture
def pool(data_dir):
    open_storage(data_dir).close()  # the schema
    pool = StoragePool(lambda: open_storage(data_dir), read_threads=2)
    yield pool
    pool.close()


async def test_a_call_gets_its_threads_own_journal_and_the_journal_sees_other_processes(pool, data_dir):
    with open_storage(data_dir) as other:
        other.add_node("a", "h")
    assert await pool.read(lambda s: s.is_registered("a"))
    journals = set()
    for _ in range(5):
        journals.add(await pool.read(lambda journal: journal))
    write_journal = await pool.write(lambda journal: journal)
    assert 1 <= len(journals) <= 2 and write_journal not in journals  # one per thread, none shared


async def test_reads_go_on_while_a_write_waits_for_the_lock(pool, data_dir):
    with open_storage(data_dir) as other:
        other.add_node("a", "h")
    with write_lock_held(data_dir):
        writing = asyncio.ensure_future(pool.write(lambda s: s.set_halt(None, True)))
        assert await pool.read(lambda s: s.is_registered("a"))  # not queued behind the write
        assert not await pool.read(lambda s: s.halted_all())
        assert not writing.done()
    await writing
    assert await pool.read(lambda s: s.halted_all())


async def test_close_closes_every_connection(pool):
    journals = [await pool.read(lambda journal: journal), await pool.write(lambda journal: journal)]
    pool.close()
    for journal in journals:
        with pytest.raises(sqlite3.ProgrammingError):
            journal.halted_all()


class Outages:
    """The writer's outage calls (:meth:`Writer.away`, ``unavailable``, ``refuse_if_away``), recorded.
    A stand-in for the writer of an engine whose database is away: tests/faults/test_postgres_faults.py
    has the real one, with PostgreSQL stopped under load."""

    def __init__(self, away=None):
        self.outage = away
        self.reported = []

    async def away(self):
        return self.outage

    def unavailable(self, exc):
        self.reported.append(exc)
        self.outage = exc

    def refuse_if_away(self):
        if self.outage is not None:
            raise self.outage


async def test_while_the_storage_is_away_a_call_is_refused_at_once_and_a_failure_is_reported(tmp_path):
    from tswarm.storage import StorageUnavailable

    outages = Outages()
    pool = StoragePool(lambda: open_storage(tmp_path / "data"), outages=outages)
    ran = []
    try:
        assert await pool.read(lambda journal: ran.append("read") or "answered") == "answered"
        gone = StorageUnavailable("PostgreSQL at postgresql://u:***@h/db is unavailable: connection refused")

        def fails(journal):
            ran.append("failing")
            raise gone

        with pytest.raises(StorageUnavailable):
            await pool.write(fails)
        assert outages.reported == [gone]  # the writer hears of it: the next calls need not try
        for call in (pool.read, pool.write):
            with pytest.raises(StorageUnavailable) as refused:
                await call(lambda journal: ran.append("refused?"))
            assert refused.value is gone
        assert ran == ["read", "failing"]  # no thread waited for the database meanwhile
        outages.outage = None  # it answers again
        assert await pool.read(lambda journal: "back") == "back"
    finally:
        pool.close()
