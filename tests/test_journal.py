"""The journal: nodes and halts, and the group-committing writer behind every 202."""
import asyncio
import sqlite3

import pytest

from tswarm.journal import DB_FILENAME, Journal, JournalUnavailable, JournalWriter, NodeExists, NodeNotFound


def test_pragmas_make_commits_durable(journal):
    assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_add_remove_and_add_again(journal):
    journal.add_node("a", "h1")
    with pytest.raises(NodeExists):
        journal.add_node("a", "h2")
    assert journal.node_auth("a").password_hash == "h1"
    journal.remove_node("a")
    assert journal.node_auth("a") is None and not journal.node_exists("a")
    with pytest.raises(NodeNotFound):
        journal.remove_node("a")
    journal.add_node("a", "h3")
    auth = journal.node_auth("a")
    assert auth.password_hash == "h3" and not auth.created


def test_halt_one_node_or_all(journal):
    journal.add_node("a", "h")
    journal.add_node("b", "h")
    journal.set_halt("a", True)
    assert journal.node_auth("a").halted and not journal.node_auth("b").halted
    journal.set_halt(None, True)
    assert journal.node_auth("b").halted and journal.halted_all()
    journal.set_halt(None, False)
    journal.set_halt("a", False)
    assert not journal.node_auth("a").halted and not journal.node_auth("b").halted
    with pytest.raises(NodeNotFound):
        journal.set_halt("nope", True)


async def test_writer_commits_and_timestamps_increase_per_node(journal):
    journal.add_node("a", "h")
    node_id = journal.node_auth("a").id
    writer = JournalWriter(journal.path)
    await writer.start()
    stamps = await asyncio.gather(*(writer.append(node_id, 20.0 + i / 10, 50.0) for i in range(200)))
    await writer.close()
    assert len(set(stamps)) == 200 and stamps == sorted(stamps)
    rows = [r for batch in journal.iter_readings() for r in batch]
    assert [r[0] for r in rows] == stamps
    assert [r[2] for r in rows] == [20.0 + i / 10 for i in range(200)]


async def test_requests_waiting_together_share_one_transaction(journal):
    journal.add_node("a", "h")
    node_id = journal.node_auth("a").id
    batches = []
    writer = JournalWriter(journal.path)
    writer.on_commit = lambda size, seconds: batches.append(size)
    await writer.start()
    await asyncio.gather(*(writer.append(node_id, 20.0, 50.0) for _ in range(500)))
    await writer.close()
    assert sum(batches) == 500
    assert len(batches) < 50  # group commit: far fewer transactions than requests


async def test_post_marks_the_node_created_in_the_same_transaction(journal):
    journal.add_node("a", "h")
    node = journal.node_auth("a")
    writer = JournalWriter(journal.path)
    await writer.start()
    await writer.append(node.id, 1.0, 2.0, create=True)
    await writer.close()
    assert journal.node_auth("a").created


async def test_timestamps_stay_increasing_across_restarts_even_if_the_clock_goes_back(journal, monkeypatch):
    journal.add_node("a", "h")
    node_id = journal.node_auth("a").id
    future = 4_000_000_000 * 10**9
    journal.conn.execute("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, 1, 1)", (node_id, future))
    writer = JournalWriter(journal.path)
    await writer.start()
    ts = await writer.append(node_id, 2.0, 2.0)
    await writer.close()
    assert ts == future + 1


async def test_a_failed_commit_raises_unavailable_and_stores_nothing(journal):
    journal.add_node("a", "h")
    node_id = journal.node_auth("a").id
    writer = JournalWriter(journal.path)
    await writer.start()
    blocker = sqlite3.connect(journal.path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past the busy timeout
    writer._conn.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(JournalUnavailable):
        await writer.append(node_id, 1.0, 1.0)
    blocker.rollback()
    blocker.close()
    assert await writer.append(node_id, 3.0, 3.0) > 0  # recovers by itself
    await writer.close()
    assert [r[2] for b in journal.iter_readings() for r in b] == [3.0]


async def test_closed_writer_refuses(journal):
    writer = JournalWriter(journal.path)
    await writer.start()
    await writer.close()
    with pytest.raises(JournalUnavailable):
        await writer.append(1, 1.0, 1.0)


def test_iter_readings_filters_by_node_and_half_open_range(journal):
    journal.add_node("a", "h")
    journal.add_node("b", "h")
    a, b = journal.node_auth("a").id, journal.node_auth("b").id
    journal.conn.executemany(
        "INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)",
        [(a, 10, 1, 1), (b, 15, 2, 2), (a, 20, 3, 3), (b, 30, 4, 4)],
    )
    rows = lambda **kw: [r for batch in journal.iter_readings(batch=1, **kw) for r in batch]  # noqa: E731
    assert rows() == [(10, "a", 1, 1), (15, "b", 2, 2), (20, "a", 3, 3), (30, "b", 4, 4)]
    assert rows(node="a") == [(10, "a", 1, 1), (20, "a", 3, 3)]
    assert rows(start_ns=15, stop_ns=30) == [(15, "b", 2, 2), (20, "a", 3, 3)]
    assert rows(node="nobody") == []


def test_journal_file_lives_in_the_data_dir(data_dir):
    with Journal.open(data_dir) as j:
        assert j.path == data_dir / DB_FILENAME and j.path.exists()


async def test_readings_of_different_nodes_committed_together_never_share_a_timestamp(journal):
    for name in ("a", "b", "c"):
        journal.add_node(name, "h")
    ids = [journal.node_auth(name).id for name in ("a", "b", "c")]
    writer = JournalWriter(journal.path)
    await writer.start()
    stamps = await asyncio.gather(*(writer.append(ids[i % 3], 20.0, 50.0) for i in range(300)))
    await writer.close()
    assert len(set(stamps)) == 300


async def test_two_writers_never_hand_out_the_same_timestamp_even_with_the_clock_behind(journal):
    """Two connections, as two `serve --workers` processes have: each reads the newest timestamp
    under the write lock, so neither repeats one the other gave (a reading in the future stands for
    a clock that stepped back: every timestamp is then the newest + 1)."""
    for name in ("a", "b"):
        journal.add_node(name, "h")
    a, b = journal.node_auth("a").id, journal.node_auth("b").id
    future = 4_000_000_000 * 10**9
    journal.conn.execute("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, 1, 1)", (a, future))
    first, second = JournalWriter(journal.path), JournalWriter(journal.path)
    await first.start()
    await second.start()
    stamps = [await first.append(a, 2.0, 2.0), await second.append(b, 2.0, 2.0), await first.append(a, 3.0, 3.0)]
    await first.close()
    await second.close()
    assert stamps == [future + 1, future + 2, future + 3]


async def test_a_pruned_empty_journal_never_reuses_a_time_before_its_horizon(journal):
    """Retention may delete every reading (all forwarded); with the clock behind, new readings still
    come after the newest pruned one, so none takes a time InfluxDB already holds for the node."""
    journal.add_node("a", "h")
    a = journal.node_auth("a").id
    future = 4_000_000_000 * 10**9
    journal.conn.execute("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, 1, 1)", (a, future))
    assert journal.prune_readings(future + 1) == 1 and journal.count_readings() == 0
    writer = JournalWriter(journal.path)
    await writer.start()
    stamps = [await writer.append(a, 2.0, 2.0), await writer.append(a, 3.0, 3.0)]
    await writer.close()
    assert stamps == [future + 1, future + 2]


def test_readings_after_names_each_reading_by_its_node_and_an_unknown_id_by_number(journal):
    journal.add_node("kitchen", "h")
    kitchen = journal.node_auth("kitchen").id
    journal.conn.executemany(
        "INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, 20.5, 50.0)", [(kitchen, 1), (999, 2)]
    )
    assert [(r.node, r.ts) for r in journal.readings_after(0, 10)] == [("kitchen", 1), ("#999", 2)]
    assert journal.readings_after(2, 10) == []
