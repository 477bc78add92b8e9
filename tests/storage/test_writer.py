"""The readings writer: group commit behind every 202, and timestamps that never repeat."""
import asyncio
import sqlite3

import pytest

from tswarm.storage import NodeNotFound, StorageUnavailable

from .conftest import add_nodes

FUTURE = 4_000_000_000 * 10**9  # a reading in the future stands for a clock that stepped back


def _rows(storage):
    return [r for batch in storage.iter_readings() for r in batch]


async def test_writer_commits_and_timestamps_increase_per_node(storage):
    (node_id,) = add_nodes(storage, "a")
    writer = storage.writer()
    await writer.start()
    stamps = await asyncio.gather(*(writer.append(node_id, 20.0 + i / 10, 50.0) for i in range(200)))
    await writer.close()
    assert len(set(stamps)) == 200 and stamps == sorted(stamps)
    rows = _rows(storage)
    assert [r[0] for r in rows] == stamps
    assert [r[2] for r in rows] == [20.0 + i / 10 for i in range(200)]


async def test_requests_waiting_together_share_one_transaction(storage):
    (node_id,) = add_nodes(storage, "a")
    batches = []
    writer = storage.writer()
    writer.on_commit = lambda size, seconds: batches.append(size)
    await writer.start()
    await asyncio.gather(*(writer.append(node_id, 20.0, 50.0) for _ in range(500)))
    await writer.close()
    assert sum(batches) == 500
    assert len(batches) < 50  # group commit: far fewer transactions than requests


async def test_commit_listeners_hear_every_commit(storage):
    (node_id,) = add_nodes(storage, "a")
    heard = []
    writer = storage.writer()
    writer.commit_listeners.append(lambda: heard.append(writer.queued))
    await writer.start()
    await writer.append(node_id, 1.0, 1.0)
    await writer.close()
    assert heard == [0]


async def test_post_marks_the_node_created_in_the_same_transaction(storage):
    (node_id,) = add_nodes(storage, "a")
    writer = storage.writer()
    await writer.start()
    await writer.append(node_id, 1.0, 2.0, create=True)
    await writer.close()
    assert storage.node_auth("a").created


async def test_timestamps_stay_increasing_across_restarts_even_if_the_clock_goes_back(storage):
    (node_id,) = add_nodes(storage, "a")
    storage.add_readings([("a", FUTURE, 1.0, 1.0)])
    writer = storage.writer()
    await writer.start()
    ts = await writer.append(node_id, 2.0, 2.0)
    await writer.close()
    assert ts == FUTURE + 1


async def test_readings_of_different_nodes_committed_together_never_share_a_timestamp(storage):
    ids = add_nodes(storage, "a", "b", "c")
    writer = storage.writer()
    await writer.start()
    stamps = await asyncio.gather(*(writer.append(ids[i % 3], 20.0, 50.0) for i in range(300)))
    await writer.close()
    assert len(set(stamps)) == 300


async def test_two_writers_never_hand_out_the_same_timestamp_even_with_the_clock_behind(storage):
    """Two connections, as two `serve --workers` processes have: each reads the newest timestamp
    under the write lock, so neither repeats one the other gave (with the clock behind every
    timestamp is the newest + 1)."""
    a, b = add_nodes(storage, "a", "b")
    storage.add_readings([("a", FUTURE, 1.0, 1.0)])
    first, second = storage.writer(), storage.writer()
    await first.start()
    await second.start()
    stamps = [await first.append(a, 2.0, 2.0), await second.append(b, 2.0, 2.0), await first.append(a, 3.0, 3.0)]
    await first.close()
    await second.close()
    assert stamps == [FUTURE + 1, FUTURE + 2, FUTURE + 3]


async def test_a_pruned_empty_journal_never_reuses_a_time_before_its_horizon(storage):
    """Retention may delete every reading (all forwarded); with the clock behind, new readings still
    come after the newest pruned one, so none takes a time InfluxDB already holds for the node."""
    (a,) = add_nodes(storage, "a")
    storage.add_readings([("a", FUTURE, 1.0, 1.0)])
    assert storage.prune_readings(FUTURE + 1) == 1 and storage.count_readings() == 0
    writer = storage.writer()
    await writer.start()
    stamps = [await writer.append(a, 2.0, 2.0), await writer.append(a, 3.0, 3.0)]
    await writer.close()
    assert stamps == [FUTURE + 1, FUTURE + 2]


async def test_closed_writer_refuses(storage):
    writer = storage.writer()
    await writer.start()
    await writer.close()
    await writer.close()  # again: nothing
    with pytest.raises(StorageUnavailable):
        await writer.append(1, 1.0, 1.0)


async def test_a_full_queue_refuses(storage):
    (a,) = add_nodes(storage, "a")
    writer = storage.writer(max_queue=0)
    await writer.start()
    with pytest.raises(StorageUnavailable, match="overloaded"):
        await writer.append(a, 1.0, 1.0)
    await writer.close()


async def test_a_failed_commit_raises_unavailable_and_stores_nothing(sqlite_storage):
    """SQLite: another process holds the write lock past the busy timeout."""
    (node_id,) = add_nodes(sqlite_storage, "a")
    writer = sqlite_storage.writer()
    await writer.start()
    blocker = sqlite3.connect(sqlite_storage.path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    writer._conn.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(StorageUnavailable):
        await writer.append(node_id, 1.0, 1.0)
    blocker.rollback()
    blocker.close()
    assert await writer.append(node_id, 3.0, 3.0) > 0  # recovers by itself
    await writer.close()
    assert [r[2] for r in _rows(sqlite_storage)] == [3.0]


def test_add_readings_keeps_the_timestamps_given_and_refuses_unknown_nodes_whole(storage):
    add_nodes(storage, "a", "gone")
    storage.remove_node("gone")
    storage.add_readings([("a", 20, 1.0, 2.0), ("gone", 10, 3.0, 4.0)])  # removed: its history stays
    with pytest.raises(NodeNotFound):
        storage.add_readings([("a", 30, 1.0, 1.0), ("never", 40, 1.0, 1.0)])
    assert _rows(storage) == [(10, "gone", 3.0, 4.0), (20, "a", 1.0, 2.0)]


@pytest.mark.parametrize("size", [1, 3, 4, 17, 255, 256, 257, 600])
async def test_a_group_of_any_size_is_stored_whole_in_order_with_its_values(sqlite_storage, size):
    """The SQLite writer inserts a group in a few multi-row statements (sqlite/writer.py insert_rows):
    every reading of a group of any size, each with its own values and time, in order."""
    (node_id,) = add_nodes(sqlite_storage, "a")
    writer = sqlite_storage.writer()
    batches = []
    writer.on_commit = lambda n, seconds: batches.append(n)
    await writer.start()
    values = [(20.0 + i / 7, 40.0 + i / 3) for i in range(size)]
    stamps = await asyncio.gather(*(writer.append(node_id, t, h) for t, h in values))
    await writer.close()
    rows = _rows(sqlite_storage)
    assert [r[0] for r in rows] == stamps == sorted(stamps) and len(set(stamps)) == size
    assert [(r[2], r[3]) for r in rows] == values
    assert sum(batches) == size


def test_insert_rows_runs_a_few_statements_a_group_not_one_a_row(sqlite_storage):
    from tswarm.storage.sqlite.writer import insert_rows, newest_id

    (node_id,) = add_nodes(sqlite_storage, "a")
    conn = sqlite_storage.conn
    ran = []
    conn.set_trace_callback(ran.append)
    first = newest_id(conn) + 1
    rows = [(first + i, node_id, 1000 + i, 20.0, 50.0, None, None, None, None, None, None) for i in range(341)]
    conn.execute("BEGIN")
    insert_rows(conn, rows)
    conn.execute("COMMIT")
    conn.set_trace_callback(None)
    inserts = [s for s in ran if s.startswith("INSERT")]
    assert len(inserts) == 5  # 341 = 256 + 64 + 16 + 4 + 1
    stored = conn.execute("SELECT id, ts FROM readings ORDER BY id").fetchall()
    assert stored == [(row[0], row[2]) for row in rows]


async def test_the_writer_thread_takes_the_next_group_without_the_event_loop(storage):
    """group.py _drain: once a group is committed, the writer thread commits the readings that queued
    meanwhile at once, even while the event loop is busy (it answers them when the loop is back)."""
    import threading

    (node_id,) = add_nodes(storage, "a")
    writer = storage.writer()
    await writer.start()
    first_held, release, second_began = threading.Event(), threading.Event(), threading.Event()
    clock, calls = writer.clock, []

    def held_clock():  # the writer thread reads it once a group, under the write lock
        calls.append(1)
        if len(calls) == 1:
            first_held.set()
            release.wait(30)
        else:
            second_began.set()
        return clock()

    writer.clock = held_clock
    first = asyncio.ensure_future(writer.append(node_id, 1.0, 1.0))
    await asyncio.get_running_loop().run_in_executor(None, first_held.wait, 30)
    second = asyncio.ensure_future(writer.append(node_id, 2.0, 2.0))
    await asyncio.sleep(0)  # queued behind the first group
    release.set()
    began = second_began.wait(30)  # the event loop blocked here: only the writer thread can go on
    assert began, "the second group waited for the event loop"
    assert await first < await second
    await writer.close()
