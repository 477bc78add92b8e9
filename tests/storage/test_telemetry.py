"""Telemetry, kept readings and the exactly-once key, on every engine: what the writer stores and
answers (a key stored once, also within one batch; a kept reading's older time, unique across all
nodes, its id still in commit order), and what the reads give back (the telemetry only when asked,
``ids=`` windows, each node's newest telemetry). Dump and load carry it all.

Where a test needs the commit's "now" to be known, the writer's clock is a fixed one (``writer.clock``:
the time a batch is stamped with); everything else is the engine's own.
"""
from __future__ import annotations

import asyncio

import pytest

from tswarm.storage import NO_EXTRA, Duplicate, OutboxReading, OutboxReadingExtra, ReadingExtra
from tswarm.storage.group import Pending, stamp_batch

from .conftest import add_nodes

NOW = 1_800_000_000 * 10**9
S = 10**9
EXTRA = ReadingExtra(vbat=3.71, rssi=-67, awake_ms=1450, lost=2)


def rows(storage, **kw):
    return [r for batch in storage.iter_readings(**kw) for r in batch]


async def started(storage, clock=None):
    writer = storage.writer()
    if clock is not None:
        writer.clock = clock
    await writer.start()
    return writer


# -- the exactly-once key ---------------------------------------------------------------------------


async def test_a_key_sent_again_is_stored_once_and_answered_with_the_first_time(storage):
    (a,) = add_nodes(storage, "a")
    writer = await started(storage)
    first = await writer.append(a, 20.0, 50.0, extra=EXTRA, key=("b00t", 7))
    again = await writer.append(a, 21.0, 51.0, key=("b00t", 7))  # its 202 was lost: the node sends it again
    await writer.close()
    assert not isinstance(first, Duplicate) and isinstance(again, Duplicate) and again == first
    assert rows(storage, with_extra=True) == [(first, "a", 20.0, 50.0, *EXTRA)]


async def test_a_key_twice_in_one_batch_is_stored_once(storage):
    (a,) = add_nodes(storage, "a")
    batches = []
    writer = await started(storage)
    writer.on_commit = lambda size, seconds: batches.append(size)
    stamps = await asyncio.gather(*(writer.append(a, 20.0 + i, 50.0, key=("x", 1)) for i in range(3)),
                                  writer.append(a, 30.0, 50.0, key=("x", 2)))
    await writer.close()
    assert batches == [4]  # one transaction
    assert stamps[0] == stamps[1] == stamps[2] != stamps[3]
    assert [isinstance(ts, Duplicate) for ts in stamps] == [False, True, True, False]
    assert [(r[0], r[2]) for r in rows(storage)] == [(stamps[0], 20.0), (stamps[3], 30.0)]


async def test_a_key_is_a_nodes_own_and_a_new_boot_starts_afresh(storage):
    a, b = add_nodes(storage, "a", "b")
    writer = await started(storage)
    stamps = [
        await writer.append(a, 1.0, 1.0, key=("boot1", 0)),
        await writer.append(b, 2.0, 2.0, key=("boot1", 0)),  # another node's seq 0
        await writer.append(a, 3.0, 3.0, key=("boot2", 0)),  # a power loss: a new boot, seq from 0 again
        await writer.append(a, 4.0, 4.0),  # no key (the seed's firmware): never a duplicate
        await writer.append(a, 4.0, 4.0),
    ]
    await writer.close()
    assert not any(isinstance(ts, Duplicate) for ts in stamps) and len(set(stamps)) == 5
    assert storage.count_readings() == 5


async def test_a_key_stored_by_another_writer_is_a_duplicate_for_this_one(open_engine):
    """Two connections, as two processes (or instances) have: the key is looked up under the write lock."""
    storage = open_engine()
    (a,) = add_nodes(storage, "a")
    first, second = await started(storage), await started(open_engine())
    ts = await first.append(a, 1.0, 1.0, key=("k", 5))
    again = await second.append(a, 1.0, 1.0, key=("k", 5))
    await first.close()
    await second.close()
    assert isinstance(again, Duplicate) and again == ts and storage.count_readings() == 1


# -- kept readings: an older time, unique across nodes, ids in commit order --------------------------


async def test_a_kept_reading_gets_arrival_minus_age_moved_past_every_nodes_readings(storage):
    a, b = add_nodes(storage, "a", "b")
    aimed = NOW - 60 * S
    storage.add_readings([("b", aimed, 1.0, 1.0), ("b", aimed + 1, 1.0, 1.0), ("a", aimed + 3, 1.0, 1.0)])
    writer = await started(storage, clock=lambda: NOW)
    kept = await writer.append(a, 5.0, 5.0, age_s=60.0)
    also = await writer.append(b, 6.0, 6.0, age_s=60.0)
    live = await writer.append(a, 7.0, 7.0)
    await writer.close()
    assert (kept, also, live) == (aimed + 2, aimed + 4, NOW)
    stamps = [r[0] for r in rows(storage)]
    assert len(stamps) == len(set(stamps)) == 6  # unique across all nodes: InfluxDB overwrites none
    # ids follow commit order, whatever the times: the forwarder's cursor misses nothing
    assert [(r[2], r[3]) for r in storage.outbox_readings(3, 10)] == [(kept, 5.0), (also, 6.0), (live, 7.0)]


async def test_kept_and_live_readings_in_one_batch(storage):
    (a,) = add_nodes(storage, "a")
    writer = await started(storage, clock=lambda: NOW)
    stamps = await asyncio.gather(
        writer.append(a, 1.0, 1.0), writer.append(a, 2.0, 2.0, age_s=300.0), writer.append(a, 3.0, 3.0, age_s=300.0),
        writer.append(a, 4.0, 4.0, age_s=1e-12),  # rounds to no age at all: after the live one before it
        writer.append(a, 5.0, 5.0),
    )
    await writer.close()
    assert stamps == [NOW, NOW - 300 * S, NOW - 300 * S + 1, NOW + 1, NOW + 2]
    assert [r[2] for r in storage.outbox_readings(0, 10)] == stamps  # ids in batch order
    assert [r[2] for r in rows(storage)] == [2.0, 3.0, 1.0, 4.0, 5.0]  # time order


async def test_a_kept_reading_sent_again_is_answered_with_its_first_time(storage):
    (a,) = add_nodes(storage, "a")
    clock = iter([NOW, NOW + 300 * S])
    writer = await started(storage, clock=lambda: next(clock))
    first = await writer.append(a, 1.0, 1.0, age_s=600.0, key=("b", 1))
    again = await writer.append(a, 1.0, 1.0, age_s=900.0, key=("b", 1))  # five minutes later, older by as much
    await writer.close()
    assert first == again == NOW - 600 * S and storage.count_readings() == 1


def test_stamp_batch_answers_in_batch_order():
    """The rule both engines' writers use (service/storage/group.py), as a pure function."""
    def item(age=0.0, key=None, node=1):
        return Pending(node, 1.0, 1.0, False, None, NO_EXTRA, age, key)

    taken = {100, 101}
    answers, stamped = stamp_batch(
        [item(), item(age=1e-7), item(key=("k", 1)), item(key=("k", 1)), item(key=("k", 2)), item(age=1e-9),
         item(age=1e-9), item()],
        last=50, now=200, stored_key=lambda node, boot, seq: 7 if seq == 2 else None, taken=taken.__contains__,
    )
    # live 200; 100 and 101 taken in the journal: 102; live 201; k1 again; k2 stored at 7; 199; 199..201
    # taken in this batch: 202; live after it
    assert answers == [200, 102, 201, 201, 7, 199, 202, 203]
    assert [type(ts) for ts in answers] == [int, int, int, Duplicate, Duplicate, int, int, int]
    assert [ts for ts, _ in stamped] == [200, 102, 201, 199, 202, 203]


# -- reads ------------------------------------------------------------------------------------------


@pytest.fixture
def mixed(storage):
    """Node a with telemetry on some readings, b without (the seed's firmware)."""
    add_nodes(storage, "a", "b")
    storage.add_readings([
        ("a", 10, 1.0, 1.0, EXTRA), ("b", 15, 2.0, 2.0), ("a", 20, 3.0, 3.0, ReadingExtra(vbat=3.2)),
        ("b", 30, 4.0, 4.0, NO_EXTRA),
    ])
    return storage


def test_default_reads_keep_todays_shapes(mixed):
    assert rows(mixed) == [(10, "a", 1.0, 1.0), (15, "b", 2.0, 2.0), (20, "a", 3.0, 3.0), (30, "b", 4.0, 4.0)]
    assert rows(mixed, with_id=True)[0] == (10, "a", 1.0, 1.0, 1)
    assert mixed.outbox_rows(0, 1) == [(1, 1, 10, 1.0, 1.0)]
    assert mixed.outbox_readings(0, 1) == [OutboxReading(1, "a", 10, 1.0, 1.0)]
    assert type(mixed.outbox_readings(0, 1)[0]) is OutboxReading


def test_with_extra_puts_the_telemetry_after_humidity_and_before_the_id(mixed):
    none = (None,) * 4
    assert rows(mixed, with_extra=True) == [
        (10, "a", 1.0, 1.0, 3.71, -67, 1450, 2), (15, "b", 2.0, 2.0, *none), (20, "a", 3.0, 3.0, 3.2, None, None, None),
        (30, "b", 4.0, 4.0, *none),
    ]
    assert rows(mixed, with_extra=True, with_id=True, node="a") == [
        (10, "a", 1.0, 1.0, 3.71, -67, 1450, 2, 1), (20, "a", 3.0, 3.0, 3.2, None, None, None, 3),
    ]
    assert mixed.outbox_rows(0, 2, with_extra=True) == [(1, 1, 10, 1.0, 1.0, *EXTRA), (2, 2, 15, 2.0, 2.0, *none)]
    [first] = mixed.outbox_readings(0, 1, with_extra=True)
    assert first == OutboxReadingExtra(1, "a", 10, 1.0, 1.0, 3.71, -67, 1450, 2) and first.rssi == -67
    assert [type(v) for v in first[5:]] == [float, int, int, int]


def test_lean_outbox_rows_stand_for_the_nine_only_where_no_reading_has_telemetry(mixed):
    """``lean=True``: a sixth item, None, in place of the four while no row of the answer has any;
    as soon as one has (a vbat alone, a lost of 0 alone), the nine items, as ``with_extra`` gives them."""
    none = (None,) * 4
    assert mixed.outbox_rows(1, 1, with_extra=True, lean=True) == [(2, 2, 15, 2.0, 2.0, None)]
    assert mixed.outbox_rows(3, 10, with_extra=True, lean=True) == [(4, 2, 30, 4.0, 4.0, None)]
    assert mixed.outbox_rows(0, 10, with_extra=True, lean=True) == mixed.outbox_rows(0, 10, with_extra=True)
    assert mixed.outbox_rows(1, 2, with_extra=True, lean=True) == [
        (2, 2, 15, 2.0, 2.0, *none), (3, 1, 20, 3.0, 3.0, 3.2, None, None, None),
    ]
    assert mixed.outbox_rows(1, 1, lean=True) == [(2, 2, 15, 2.0, 2.0)]  # without with_extra: the five
    assert mixed.outbox_rows(10, 10, with_extra=True, lean=True) == []
    mixed.add_readings([("b", 40, 5.0, 5.0, ReadingExtra(lost=0)), ("b", 50, 6.0, 6.0, ReadingExtra(awake_ms=0))])
    assert mixed.outbox_rows(4, 10, with_extra=True, lean=True) == [
        (5, 2, 40, 5.0, 5.0, None, None, None, 0), (6, 2, 50, 6.0, 6.0, None, None, 0, None),
    ]
    assert mixed.outbox_rows(4, 10, 45, None, with_extra=True, lean=True) == [(6, 2, 50, 6.0, 6.0, None, None, 0, None)]


def test_ids_keep_only_the_readings_in_the_window(mixed):
    assert [r[0] for r in rows(mixed, ids=(1, 3))] == [15, 20]
    assert [r[0] for r in rows(mixed, ids=(2, None))] == [20, 30]
    assert [r[0] for r in rows(mixed, ids=(None, 1))] == [10]
    assert rows(mixed, ids=(4, 10)) == []
    assert rows(mixed, ids=(0, 10**6)) == rows(mixed)  # a wide window: SQLite walks the times, not the ids
    for kw in ({"ids": (1, 3)}, {"ids": (1, 3), "node": "b"}, {"ids": (0, 4), "after": (15, 2)}, {"ids": (2, 2)}):
        assert mixed.count_readings_in(**kw) == len(rows(mixed, **kw)), kw
    assert mixed.page_end(limit=1, ids=(1, 4)) == (15, 2)
    assert mixed.page_end(limit=1, ids=(1, 4), after=(15, 2)) == (20, 3)
    assert mixed.page_end(limit=1, ids=(3, 4)) is None


async def test_each_node_shows_the_telemetry_of_its_newest_reading_by_time(storage):
    a, b, _ = add_nodes(storage, "a", "b", "c")
    writer = await started(storage, clock=lambda: NOW)
    await writer.append(a, 1.0, 1.0, extra=ReadingExtra(vbat=3.9, rssi=-50, awake_ms=900))
    await writer.append(a, 1.0, 1.0, extra=ReadingExtra(vbat=3.0, rssi=-90, awake_ms=100), age_s=600)  # kept: older
    await writer.append(b, 1.0, 1.0)
    await writer.close()
    status = {n.name: (n.last_vbat, n.last_rssi, n.last_awake_ms) for n in storage.list_nodes()}
    assert status == {"a": (3.9, -50, 900), "b": (None, None, None), "c": (None, None, None)}


# -- moving house ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
async def test_a_dump_carries_the_telemetry_and_the_keys_into_either_engine(storage, target, postgres, tmp_path):
    from tswarm.storage.postgres import PostgresStorage
    from tswarm.storage.sqlite import SqliteStorage

    (a,) = add_nodes(storage, "a")
    writer = await started(storage)
    first = await writer.append(a, 1.0, 2.0, extra=EXTRA, key=("boot-1", 2**31 - 1))
    await writer.append(a, 3.0, 4.0)
    await writer.close()
    engine, place = (SqliteStorage, tmp_path / "copy") if target == "sqlite" else (PostgresStorage, postgres.new_database())
    with storage.dump() as dump:
        engine.load(place, dump)
    with (SqliteStorage.open(place) if target == "sqlite" else PostgresStorage(place)) as copy:
        assert rows(copy, with_extra=True, with_id=True) == rows(storage, with_extra=True, with_id=True)
        with copy.dump() as moved, storage.dump() as source:
            assert [r for batch in moved.readings for r in batch] == [r for batch in source.readings for r in batch]
        writer = await started(copy)
        again = await writer.append(a, 1.0, 2.0, key=("boot-1", 2**31 - 1))  # the key moved too
        await writer.close()
        assert isinstance(again, Duplicate) and again == first
