"""The SQLite writers of `tswarm serve --workers N` queue for the journal's write lock at a ``flock``
(service/storage/sqlite/writer.py :class:`WriterLock`), and still keep every promise of a 202.

Real processes (forked, each with its own writer and connection, as the workers are) on a real
journal; nothing is mocked.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3

import pytest

from tswarm.storage import StorageUnavailable
from tswarm.storage.sqlite import SqliteStorage
from tswarm.storage.sqlite.writer import WriterLock, writer_lock_path

from .conftest import add_nodes

_fork = multiprocessing.get_context("fork")

PROCESSES = 4
ROUNDS = 15  # each a burst of BURST readings at once: many commits per process, overlapping the others'
BURST = 20


def _writer_process(data_dir, index: int, node_ids: list[int], start, results) -> None:
    """One worker's writer: bursts of readings (each keyed (f"p{index}", seq)), every answer sent back."""

    async def main() -> list[tuple[int, int]]:
        with SqliteStorage.open(data_dir) as journal:
            writer = journal.writer()
            await writer.start()
            start.wait()
            acknowledged = []
            for round_no in range(ROUNDS):
                seqs = range(round_no * BURST, (round_no + 1) * BURST)
                stamps = await asyncio.gather(*(
                    writer.append(node_ids[seq % len(node_ids)], float(index), float(seq), key=(f"p{index}", seq))
                    for seq in seqs
                ))
                acknowledged += zip(seqs, stamps)
            await writer.close()
            return acknowledged

    results.put((index, asyncio.run(main())))


def test_writer_processes_committing_at_once_keep_unique_increasing_timestamps_and_every_reading_once(tmp_path):
    data_dir = tmp_path / "data"
    with SqliteStorage.open(data_dir) as journal:
        node_ids = add_nodes(journal, "a", "b", "c")
        path = journal.path
    start, results = _fork.Event(), _fork.Queue()
    children = [_fork.Process(target=_writer_process, args=(data_dir, i, node_ids, start, results)) for i in range(PROCESSES)]
    for child in children:
        child.start()
    start.set()
    answers = dict(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    acknowledged = {(f"p{index}", seq): ts for index, acks in answers.items() for seq, ts in acks}
    assert len(acknowledged) == PROCESSES * ROUNDS * BURST  # every reading answered with a time (none refused)
    assert len(set(acknowledged.values())) == len(acknowledged)  # unique across processes and nodes

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT boot, seq, ts, node_id FROM readings ORDER BY id").fetchall()
    assert {(boot, seq): ts for boot, seq, ts, _ in rows} == acknowledged  # each stored once, at its answered time
    assert len(rows) == len(acknowledged)
    stamps = [ts for _, _, ts, _ in rows]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # strictly increasing in commit order
    assert all(node_ids[seq % len(node_ids)] == node_id for _, seq, _, node_id in rows)
    assert os.path.exists(writer_lock_path(path))


def _hold_lock(path, held) -> None:
    lock = WriterLock(path)
    lock.acquire()
    held.set()
    signal.pause()  # until killed


def test_a_killed_process_lets_the_lock_go(tmp_path):
    path = tmp_path / "tswarm.db-writer.lock"
    held = _fork.Event()
    child = _fork.Process(target=_hold_lock, args=(path, held))
    child.start()
    try:
        assert held.wait(60)
        waiter = WriterLock(path, timeout_s=0.2)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            waiter.acquire()  # held by the other process: a bounded wait, then SQLite's own error
    finally:
        child.kill()
        child.join()
    assert child.exitcode == -signal.SIGKILL
    waiter.timeout_s = 60
    waiter.acquire()  # the kernel let it go with the killed process's files
    waiter.release()
    waiter.close()


async def test_a_writer_commits_only_once_its_sibling_lets_the_lock_go(sqlite_storage):
    """Another worker's writer (the lock held on another open file, as another process would) holds
    up this one's commit; the moment it lets go, the reading is committed and answered."""
    (node_id,) = add_nodes(sqlite_storage, "a")
    writer = sqlite_storage.writer()
    await writer.start()
    sibling = WriterLock(writer_lock_path(sqlite_storage.path))
    sibling.acquire()
    appended = asyncio.create_task(writer.append(node_id, 1.0, 2.0))
    await asyncio.sleep(0.2)
    assert not appended.done() and sqlite_storage.count_readings() == 0  # not committed, so not answered
    sibling.release()
    assert await appended > 0
    assert sqlite_storage.count_readings() == 1
    sibling.close()
    await writer.close()


async def test_a_writer_waiting_past_the_busy_timeout_answers_unavailable_and_recovers(sqlite_storage):
    """A sibling stopped while it holds the lock: the waiting writer gives up as a busy journal
    always made it (503), stores nothing, and commits again once the lock is free."""
    (node_id,) = add_nodes(sqlite_storage, "a")
    writer = sqlite_storage.writer()
    await writer.start()
    writer._lock.timeout_s = 0.05
    sibling = WriterLock(writer_lock_path(sqlite_storage.path))
    sibling.acquire()
    with pytest.raises(StorageUnavailable, match="database is locked"):
        await writer.append(node_id, 1.0, 1.0)
    assert sqlite_storage.count_readings() == 0
    sibling.release()
    sibling.close()
    writer._lock.timeout_s = 60
    assert await writer.append(node_id, 3.0, 3.0) > 0  # the abandoned wait let the lock go again
    await writer.close()
    assert sqlite_storage.count_readings() == 1


async def test_the_cli_writing_beside_the_service_is_waited_for_as_before(sqlite_storage):
    """The CLI and the admin API take only SQLite's lock (busy timeout): a writer holding the flock
    waits for their transaction, then commits."""
    (node_id,) = add_nodes(sqlite_storage, "a")
    writer = sqlite_storage.writer()
    await writer.start()
    cli = sqlite3.connect(sqlite_storage.path, isolation_level=None, timeout=10)
    cli.execute("BEGIN IMMEDIATE")
    cli.execute("UPDATE nodes SET interval_s = 60")
    appended = asyncio.create_task(writer.append(node_id, 1.0, 1.0))
    await asyncio.sleep(0.1)
    assert not appended.done()
    cli.execute("COMMIT")
    cli.close()
    assert await appended > 0
    await writer.close()
