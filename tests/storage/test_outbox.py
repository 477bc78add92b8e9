"""The outbox: the forward cursor, the readings after it, the readings InfluxDB refused for good."""
from tswarm.storage import OutboxReading
from tswarm.store_status import store_status

from ..conftest import test_config
from .conftest import add_nodes


def test_the_cursor_only_moves_forward_and_rejected_readings_are_kept(storage):
    add_nodes(storage, "a")
    storage.add_readings([("a", ts, 20, 50) for ts in (10, 20, 30)])
    assert storage.forward_cursor() == 0 and storage.count_outbox(0) == 3
    first, second, third = storage.outbox_readings(0, 10)
    storage.mark_forwarded(third.id, [(second, "HTTP 400: nope")])
    storage.mark_forwarded(first.id)  # late, from a backfill or a race: no step back
    assert storage.forward_cursor() == third.id
    assert storage.count_outbox(storage.forward_cursor()) == 0
    assert [(r, reason) for r, reason, _ in storage.rejected_readings()] == [(second, "HTTP 400: nope")]
    assert storage.count_rejected() == 1


def test_outbox_readings_in_commit_order_with_node_names_and_a_time_range(storage):
    a, b = add_nodes(storage, "a", "b")
    storage.add_readings([("b", 30, 3.0, 3.5), ("a", 10, 1.0, 1.5), ("a", 40, 4.0, 4.5)])
    readings = storage.outbox_readings(0, 10)
    assert [(r.node, r.ts) for r in readings] == [("b", 30), ("a", 10), ("a", 40)]
    assert storage.outbox_rows(0, 10) == [(r.id, {"a": a, "b": b}[r.node], r.ts, r.temperature, r.humidity) for r in readings]
    assert storage.outbox_readings(readings[0].id, 1) == [readings[1]]
    assert storage.outbox_readings(0, 10, start_ns=20, stop_ns=40) == [readings[0]]
    assert storage.count_outbox(0, start_ns=20) == 2 and storage.count_outbox(0, stop_ns=40) == 2
    assert storage.outbox_readings(readings[-1].id, 10) == []


def test_backlog_bounds(storage):
    assert (storage.last_reading_id(), storage.oldest_unforwarded_ts(), storage.first_id_from(0)) == (0, None, 0)
    add_nodes(storage, "a")
    storage.add_readings([("a", ts, 20, 50) for ts in (10, 20, 30)])
    first, second, third = storage.outbox_readings(0, 10)
    assert storage.last_reading_id() == third.id and storage.oldest_unforwarded_ts() == 10
    storage.mark_forwarded(first.id)
    assert storage.oldest_unforwarded_ts() == 20
    assert storage.first_id_from(20) == first.id  # resume after it: 20 and 30 are sent
    assert storage.first_id_from(31) == third.id  # nothing that late: resume after everything


def test_readings_refused_during_a_backfill_are_kept_without_moving_the_cursor(storage):
    add_nodes(storage, "a")
    storage.add_readings([("a", 10, 1.0, 2.0)])
    (reading,) = storage.outbox_readings(0, 10)
    storage.record_rejected([(reading, "HTTP 400: field type conflict")])
    storage.record_rejected([(reading, "HTTP 400: again")])  # the same reading once
    assert storage.forward_cursor() == 0
    assert [(r, why) for r, why, _ in storage.rejected_readings()] == [(reading, "HTTP 400: again")]


def test_rejected_readings_newest_first(storage):
    add_nodes(storage, "a")
    storage.add_readings([("a", ts, 1.0, 2.0) for ts in (10, 20, 30)])
    readings = storage.outbox_readings(0, 10)
    storage.mark_forwarded(readings[-1].id, [(r, "HTTP 400") for r in readings])
    assert [r.ts for r, _, _ in storage.rejected_readings()] == [30, 20, 10]
    assert [r.ts for r, _, _ in storage.rejected_readings(limit=1)] == [30]


def test_a_reading_whose_node_row_is_gone_is_named_by_its_id(sqlite_storage):
    """SQLite: a reading with no node row (only SQL can make one) still forwards, as ``#id``."""
    (kitchen,) = add_nodes(sqlite_storage, "kitchen")
    sqlite_storage.conn.executemany(
        "INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, 20.5, 50.0)", [(kitchen, 1), (999, 2)]
    )
    assert [(r.node, r.ts) for r in sqlite_storage.outbox_readings(0, 10)] == [("kitchen", 1), ("#999", 2)]
    assert sqlite_storage.outbox_readings(2, 10) == []
    assert [r[1] for b in sqlite_storage.iter_readings() for r in b] == ["kitchen", "#999"]
    assert isinstance(sqlite_storage.outbox_readings(0, 1)[0], OutboxReading)


async def test_readings_after_retention_emptied_the_journal_still_come_after_the_cursor(storage):
    """Retention prunes every forwarded reading (a swarm quiet for longer than TSWARM_JOURNAL_RETENTION);
    the next readings must still be above the forward cursor, or the forwarder never sends them.
    (SQLite hands out MAX(rowid) + 1: in an emptied table that is 1 again.)"""
    add_nodes(storage, "a")
    node_id = storage.node_auth("a").id
    writer = storage.writer()
    await writer.start()
    try:
        for _ in range(3):
            await writer.append(node_id, 20.0, 50.0)
        cursor = storage.outbox_readings(0, 10)[-1].id
        storage.mark_forwarded(cursor)
        assert storage.prune_readings(2**63 - 1, up_to_id=cursor) == 3 and storage.count_readings() == 0
        await writer.append(node_id, 21.0, 51.0)
    finally:
        await writer.close()
    storage.add_readings([("a", 2**62, 22.0, 52.0)])  # an import after it: the same rule
    waiting = storage.outbox_readings(storage.forward_cursor(), 10)
    assert [(r.id > cursor, r.temperature) for r in waiting] == [(True, 21.0), (True, 22.0)]
    assert storage.count_outbox(storage.forward_cursor()) == 2


def test_the_status_reads_the_backlog_in_one_snapshot_while_another_instance_forwards(open_engine, tmp_path, monkeypatch):
    """``/healthz``, ``/metrics`` and ``tswarm status`` read the cursor, the oldest reading after it and
    the newest id: the forwarder (another instance's, on PostgreSQL) catching up between those reads
    must not give a backlog whose oldest reading is none, or a cursor the backlog disagrees with."""
    storage, other_instance = open_engine(), open_engine()
    add_nodes(storage, "a")
    storage.add_readings([("a", ts, 20, 50) for ts in (10, 20, 30)])
    last = storage.last_reading_id()
    read_cursor, moved = storage.forward_cursor, []

    def cursor_then_forwarded() -> int:
        cursor = read_cursor()
        if not moved:  # right after the status read the cursor, the other forwarder sends everything
            other_instance.mark_forwarded(last)
            moved.append(last)
        return cursor

    monkeypatch.setattr(storage, "forward_cursor", cursor_then_forwarded)
    status = store_status(storage, test_config(tmp_path, store="influxdb", influx_api="1"), now_ns=10**9 + 10)
    assert moved == [last] and other_instance.forward_cursor() == last
    assert (status["forward_cursor"], status["backlog"], status["oldest_age_s"]) == (0, 3, 1.0)
    assert store_status(storage, test_config(tmp_path, store="influxdb", influx_api="1"))["backlog"] == 0
