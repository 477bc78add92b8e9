"""The forwarder's line protocol is exactly what influxdb-client's ``Point`` writes, byte for byte.

``LineEncoder`` lets ``Point`` render each distinct piece once (a node's series key, the text of a
temperature, humidity or battery voltage) and joins the pieces; these tests hold it to a ``Point``
built per reading, with the telemetry a node sent (``vbat`` float, ``rssi``/``awake_ms``/``lost``
integers) as fields only when present.
"""
from hypothesis import given, settings, strategies as st
from influxdb_client import Point, WritePrecision

from tswarm.forwarder import BatchReader
from tswarm.influx import MEASUREMENT, TAG_NODE
from tswarm.influx.lines import LineEncoder, line_protocol
from tswarm.influx.write import V1Target
from tswarm.storage import OutboxReading, OutboxReadingExtra, ReadingExtra
from tests.conftest import register

# Any text a tag may hold (spaces, commas, equals signs, backslashes), though node names are tamer.
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-100, 100).map(lambda tenths: tenths / 10),  # DHT22: few distinct values, cache hits
    st.integers(-40, 100),  # DHT11 integers, as ints
    st.sampled_from([0.0, -0.0, 1e-07, 1e16, 123456789.0, -40.0]),
)
plain_readings = st.builds(OutboxReading, st.integers(1, 10**9), names, st.integers(0, 2**62), values, values)


def maybe(strategy):
    return st.one_of(st.none(), strategy)


volts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(2500, 4300).map(lambda mv: mv / 1000),  # a LiPo's range in millivolts: cache hits
    st.sampled_from([0.0, -0.0, 3.3, 20.0, 1e-07, 5]),
)
whole = st.one_of(st.integers(-127, 0), st.integers(0, 3_600_000), st.integers(-(2**63), 2**63 - 1))
extra_readings = st.builds(
    OutboxReadingExtra, st.integers(1, 10**9), names, st.integers(0, 2**62), values, values,
    maybe(volts), maybe(whole), maybe(whole), maybe(whole),
)
readings = st.one_of(plain_readings, extra_readings)


def reference(r) -> str:
    """One Point per reading, as influxdb-client's documentation builds them; the telemetry as
    fields of their type (vbat a float, the rest integers), each only when the node sent it."""
    p = (
        Point(MEASUREMENT).tag(TAG_NODE, r.node).field("temperature", float(r.temperature))
        .field("humidity", float(r.humidity)).time(r.ts, WritePrecision.NS)
    )
    if isinstance(r, OutboxReadingExtra):
        if r.vbat is not None:
            p.field("vbat", float(r.vbat))
        for name in ("rssi", "awake_ms", "lost"):
            if getattr(r, name) is not None:
                p.field(name, int(getattr(r, name)))
    return p.to_line_protocol()


def test_the_telemetry_is_fields_of_the_same_point_only_when_present():
    """Whole lines, written out: Point's field order (sorted by name), integers with ``i``."""
    full = OutboxReadingExtra(1, "attic", 1_000, 21.5, 40.0, 3.71, -67, 812, 2)
    some = OutboxReadingExtra(2, "attic", 1_001, 21.5, 40.0, vbat=4.0, rssi=-70)
    none = OutboxReadingExtra(3, "attic", 1_002, 21.5, 40.0)
    assert line_protocol([full, some, none, OutboxReading(4, "attic", 1_003, 21.5, 40.0)]) == (
        b"climate,node=attic awake_ms=812i,humidity=40,lost=2i,rssi=-67i,temperature=21.5,vbat=3.71 1000\n"
        b"climate,node=attic humidity=40,rssi=-70i,temperature=21.5,vbat=4 1001\n"
        b"climate,node=attic humidity=40,temperature=21.5 1002\n"
        b"climate,node=attic humidity=40,temperature=21.5 1003"
    )


SHARED = LineEncoder()  # kept across examples: warm caches must give the same bytes as cold ones
SMALL = LineEncoder()
SMALL.MAX_CACHED = 3  # caches that start again all the time


@settings(max_examples=300, deadline=None)
@given(st.lists(readings, max_size=30))
def test_encoder_writes_what_point_writes(batch):
    expected = "\n".join(reference(r) for r in batch).encode()
    assert line_protocol(batch) == expected
    assert SHARED.encode(batch) == expected
    assert SMALL.encode(batch) == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(readings, max_size=30), st.integers(1, 5))
def test_rows_with_node_ids_give_the_same_lines(batch, max_cached):
    """Rows as outbox_rows gives them: five items, or nine with the telemetry (with_extra=True)."""
    ids = {name: number for number, name in enumerate(sorted({r.node for r in batch}), start=1)}
    rows = [(r.id, ids[r.node], *r[2:]) for r in batch]
    encoder = LineEncoder()  # an encoder's node ids always mean the same nodes: one per journal
    encoder.MAX_CACHED = max_cached
    names = {number: name for name, number in ids.items()}
    assert encoder.encode_rows(rows, names) == line_protocol(batch)
    assert encoder.encode_rows(rows, names) == line_protocol(batch)  # again, from the caches
    # lean rows (outbox_rows(..., lean=True)): a None for the four telemetry items of a reading without any
    lean = [(*row[:5], None) if all(v is None for v in row[5:]) else row for row in rows]
    assert LineEncoder().encode_rows(lean, names) == encoder.encode_rows(lean, names) == line_protocol(batch)


async def test_batches_read_from_the_journal_are_the_readings_gzipped(journal):
    """What the forwarder sends: the journal's readings in id order, as Point lines, gzipped (v1 API)."""
    import gzip

    register(journal, "kitchen")
    register(journal, "attic")
    journal.add_readings([("kitchen", 1_000, 21.5, 40.0), ("attic", 1_001, -3.2, 80.1), ("kitchen", 1_002, 0.0, 100.0)])
    target = V1Target("http://127.0.0.1:1", "tswarm")
    await target.close()  # only its prepare() is used
    reader = BatchReader(journal, target, limit=2)
    first = reader.read(0)
    assert gzip.decompress(first.payload) == (
        b"climate,node=kitchen humidity=40,temperature=21.5 1000\nclimate,node=attic humidity=80.1,temperature=-3.2 1001"
    )
    assert list(first) == journal.outbox_readings(0, 2, with_extra=True) and first.last_id == first[1].id
    second = reader.read(first.last_id)
    assert gzip.decompress(second.payload) == b"climate,node=kitchen humidity=100,temperature=0 1002"
    assert reader.read(second.last_id) is None


async def test_the_reader_asks_for_lean_rows_while_the_last_batch_had_no_telemetry(journal):
    """Old firmware's readings are read lean (one column for the four), today's with all nine at once;
    the payload is the same lines either way, and a refused batch still splits into whole readings."""
    import gzip

    register(journal, "attic")
    journal.add_readings(
        [("attic", 3_000 + i, 21.5, 40.0) for i in range(2)]  # ids 1-2: the seed's firmware
        + [("attic", 3_010 + i, 21.5, 40.0, ReadingExtra(rssi=-70)) for i in range(3)]  # 3-5: today's
        + [("attic", 3_020 + i, 21.5, 40.0) for i in range(4)]  # 6-9: none again
    )
    target = V1Target("http://127.0.0.1:1", "tswarm")
    await target.close()
    reader = BatchReader(journal, target, limit=2)
    shapes, lines, after = [], [], 0
    while (batch := reader.read(after)) is not None:
        shapes.append((len(batch.rows[0]), reader.lean))
        lines += gzip.decompress(batch.payload).split(b"\n")
        assert list(batch) == journal.outbox_readings(after, 2, with_extra=True)
        after = batch.last_id
    # (the rows' items, whether the next is asked for lean): 1-2 lean; 3-4 asked lean, read again
    # with nine (rssi); 5-6 nine (5 has rssi); 7-8 nine, none has any: 9 is asked lean
    assert shapes == [(6, True), (9, False), (9, False), (9, True), (6, True)]
    assert lines == line_protocol(journal.outbox_readings(0, 10, with_extra=True)).split(b"\n")


async def test_the_forwarders_batches_carry_the_telemetry_that_was_stored(journal):
    """The journal's telemetry reaches the payload; a reading without it is today's line."""
    register(journal, "attic")
    journal.add_readings([
        ("attic", 2_000, 21.5, 40.0, ReadingExtra(vbat=3.71, rssi=-67, awake_ms=812, lost=3)),
        ("attic", 2_001, 21.5, 40.0),
        ("attic", 2_002, 21.5, 40.0, ReadingExtra(rssi=-80)),
    ])
    target = V1Target("http://127.0.0.1:1", "tswarm")
    await target.close()
    batch = BatchReader(journal, target, limit=10).read(0)
    import gzip

    assert gzip.decompress(batch.payload) == (
        b"climate,node=attic awake_ms=812i,humidity=40,lost=3i,rssi=-67i,temperature=21.5,vbat=3.71 2000\n"
        b"climate,node=attic humidity=40,temperature=21.5 2001\n"
        b"climate,node=attic humidity=40,rssi=-80i,temperature=21.5 2002"
    )
    assert batch[0] == OutboxReadingExtra(batch[0].id, "attic", 2_000, 21.5, 40.0, 3.71, -67, 812, 3)
    assert line_protocol(batch[:]) == gzip.decompress(batch.payload)  # a split batch: the same lines
