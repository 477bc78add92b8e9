"""Reads: readings by node and time range, counts, pages, the snapshot, what lies below the horizon."""
import pytest

from tswarm.storage import OutboxReading

from .conftest import add_nodes

T0 = 1_700_000_000 * 10**9
NS = 10**9


@pytest.fixture
def four(storage):
    add_nodes(storage, "a", "b")
    storage.add_readings([("a", 10, 1, 1), ("b", 15, 2, 2), ("a", 20, 3, 3), ("b", 30, 4, 4)])
    return storage


def rows(storage, **kw):
    return [r for batch in storage.iter_readings(batch=1, **kw) for r in batch]


def test_iter_readings_filters_by_node_and_half_open_range(four):
    assert rows(four) == [(10, "a", 1, 1), (15, "b", 2, 2), (20, "a", 3, 3), (30, "b", 4, 4)]
    assert rows(four, node="a") == [(10, "a", 1, 1), (20, "a", 3, 3)]
    assert rows(four, start_ns=15, stop_ns=30) == [(15, "b", 2, 2), (20, "a", 3, 3)]
    assert rows(four, node="nobody") == []


def test_counts_agree_with_what_iter_readings_yields(four):
    assert four.count_readings() == 4
    for kw in ({}, {"node": "a"}, {"start_ns": 15, "stop_ns": 30}, {"node": "nobody"}, {"after": (15, 0)}):
        assert four.count_readings_in(**kw) == len(rows(four, **kw)), kw


def test_a_page_resumes_strictly_after_its_last_row(four):
    page = rows(four, limit=2, with_id=True)
    assert [r[:4] for r in page] == [(10, "a", 1, 1), (15, "b", 2, 2)]
    end = four.page_end(limit=2)
    assert end == (page[-1][0], page[-1][4])
    assert rows(four, after=end) == [(20, "a", 3, 3), (30, "b", 4, 4)]
    assert four.page_end(after=end, limit=2) is None  # the last page: nothing follows
    assert four.page_end(node="nobody", limit=2) is None


def test_readings_sharing_a_timestamp_resume_by_id(storage):
    add_nodes(storage, "a", "b")
    storage.add_readings([("b", 10, 1, 1), ("a", 10, 2, 2), ("a", 20, 3, 3)])
    first = rows(storage, limit=1, with_id=True)[0]
    assert [r[1] for r in rows(storage, after=(first[0], first[4]))] == ["a", "a"]


def test_the_snapshot_sees_the_journal_as_of_its_first_read(four, open_engine):
    other = open_engine()
    with four.snapshot():
        assert four.count_readings() == 4
        other.add_readings([("a", 40, 5, 5)])
        assert four.count_readings() == 4 and len(rows(four)) == 4
    assert four.count_readings() == 5


def test_reading_counts_since(four):
    assert four.reading_counts_since(15) == {"a": 1, "b": 2}
    assert four.reading_counts_since(31) == {}


def test_a_removed_nodes_readings_stay_readable_by_name(four):
    four.remove_node("a")
    assert rows(four, node="a") == [(10, "a", 1, 1), (20, "a", 3, 3)]


def test_kept_below_the_horizon_unforwarded_and_rejected_once_each_by_time_then_node(storage):
    add_nodes(storage, "b", "a")
    storage.add_readings([("b", T0, 1.0, 2.0), ("a", T0, 3.0, 4.0), ("a", T0 + NS, 5.0, 6.0), ("b", T0 + 9 * NS, 7.0, 8.0)])
    reading = storage.outbox_readings(0, 1)[0]  # b at T0: refused by InfluxDB, still in `readings` too
    storage.record_rejected([(reading, "HTTP 400: partial write")])
    pruned = OutboxReading(99, "a", T0 - NS, 9.0, 9.5)  # refused, and pruned from `readings` already
    storage.record_rejected([(pruned, "HTTP 400")])
    assert list(storage.iter_kept_below(T0 + 5 * NS)) == [
        (T0 - NS, "a", 9.0, 9.5), (T0, "a", 3.0, 4.0), (T0, "b", 1.0, 2.0), (T0 + NS, "a", 5.0, 6.0),
    ]
    assert list(storage.iter_kept_below(T0 + 5 * NS, node="b", start_ns=T0)) == [(T0, "b", 1.0, 2.0)]


def test_every_range_query_is_built_by_one_where_builder():
    from tswarm.storage.sqlite.reads import where

    assert where() == ("1", [])
    assert where(after_id=3, start_ns=10, stop_ns=20) == ("readings.id > ? AND readings.ts >= ? AND readings.ts < ?", [3, 10, 20])
    assert where(after=(5, 7), node_id=2, table="r") == ("r.ts >= ? AND (r.ts > ? OR r.id > ?) AND r.node_id = ?", [5, 5, 7, 2])
    assert where(stop_ns=9, up_to_id=4) == ("readings.id <= ? AND readings.ts < ?", [4, 9])
