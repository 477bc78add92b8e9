"""The forwarder's line protocol is exactly what influxdb-client's ``Point`` writes, byte for byte.

``LineEncoder`` lets ``Point`` render each distinct piece once (a node's series key, the text of a
temperature or humidity) and joins the pieces; these tests hold it to a ``Point`` built per reading.
"""
from hypothesis import given, settings, strategies as st
from influxdb_client import Point, WritePrecision

from tswarm.forwarder import BatchReader
from tswarm.influx import MEASUREMENT, TAG_NODE
from tswarm.influx.lines import LineEncoder, line_protocol
from tswarm.influx.write import V1Target
from tswarm.storage import OutboxReading
from tests.conftest import register

# Any text a tag may hold (spaces, commas, equals signs, backslashes), though node names are tamer.
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-100, 100).map(lambda tenths: tenths / 10),  # DHT22: few distinct values, cache hits
    st.integers(-40, 100),  # DHT11 integers, as ints
    st.sampled_from([0.0, -0.0, 1e-07, 1e16, 123456789.0, -40.0]),
)
readings = st.builds(OutboxReading, st.integers(1, 10**9), names, st.integers(0, 2**62), values, values)


def reference(r: OutboxReading) -> str:
    """One Point per reading, as influxdb-client's documentation builds them."""
    return (
        Point(MEASUREMENT).tag(TAG_NODE, r.node).field("temperature", float(r.temperature))
        .field("humidity", float(r.humidity)).time(r.ts, WritePrecision.NS).to_line_protocol()
    )


SHARED = LineEncoder()  # kept across examples: warm caches must give the same bytes as cold ones
SMALL = LineEncoder()
SMALL.MAX_CACHED = 3  # caches that start again all the time


@settings(max_examples=400)
@given(st.lists(readings, max_size=30))
def test_encoder_writes_what_point_writes(batch):
    expected = "\n".join(reference(r) for r in batch).encode()
    assert line_protocol(batch) == expected
    assert SHARED.encode(batch) == expected
    assert SMALL.encode(batch) == expected


@settings(max_examples=200)
@given(st.lists(readings, max_size=30), st.integers(1, 5))
def test_rows_with_node_ids_give_the_same_lines(batch, max_cached):
    ids = {name: number for number, name in enumerate(sorted({r.node for r in batch}), start=1)}
    rows = [(r.id, ids[r.node], r.ts, r.temperature, r.humidity) for r in batch]
    encoder = LineEncoder()  # an encoder's node ids always mean the same nodes: one per journal
    encoder.MAX_CACHED = max_cached
    names = {number: name for name, number in ids.items()}
    assert encoder.encode_rows(rows, names) == line_protocol(batch)
    assert encoder.encode_rows(rows, names) == line_protocol(batch)  # again, from the caches


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
    assert list(first) == journal.outbox_readings(0, 2) and first.last_id == first[1].id
    second = reader.read(first.last_id)
    assert gzip.decompress(second.payload) == b"climate,node=kitchen humidity=100,temperature=0 1002"
    assert reader.read(second.last_id) is None
