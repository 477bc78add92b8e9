"""The PostgreSQL export's fast path (service/storage/postgres/export.py: the server writes each line,
streamed in chunks) against the generic path (service/export.py formats rows in Python), on the real
PostgreSQL of the session (tests/servers.py): byte for byte, for random journals and filters, for
``export_chunks``, ``tswarm export`` and ``GET /api/readings``.

The generic path is chosen by making the storage's ``export_lines`` answer None, which is what an
engine without a fast path answers (the default of the interface): nothing is mocked, both paths
read the same real database.
"""
from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tswarm.export import decode_cursor, export_chunks
from tswarm import history
from tswarm.names import NODE_NAME
from tswarm.storage.interface import ReadingExtra
from tswarm.storage import StorageUnavailable
from tswarm.storage.postgres import PostgresStorage
from tswarm.timefmt import MAX_NS, MIN_NS
from tests.conftest import add_readings

NS = 1_000_000_000
FUNCTION_FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@contextlib.contextmanager
def generic_path(monkeypatch):
    """Every PostgreSQL storage formats its export in Python while inside."""
    with monkeypatch.context() as patch:
        patch.setattr(PostgresStorage, "export_lines", lambda self, *args, **kwargs: None)
        yield


def both_paths(storage, monkeypatch, **args) -> tuple[str, str]:
    """``(fast, generic)``: the whole export of ``args`` by each path (the fast one must be taken)."""
    fmt = args.get("fmt", "csv")
    rest = {k: v for k, v in args.items() if k in ("node", "start_ns", "stop_ns", "limit")}
    if not isinstance(args.get("after"), history.Cursor):
        assert storage.export_lines(fmt, after=args.get("after"), **rest) is not None, "the COPY path was not taken"
    fast = "".join(export_chunks(storage, **args))
    with generic_path(monkeypatch):
        generic = "".join(export_chunks(storage, **args))
    return fast, generic


def warmed(storage: PostgresStorage) -> PostgresStorage:
    """``storage`` with three connections open in its pool: the pool makes new ones in a thread that
    draws from ``random`` (its jitter), which hypothesis reports when it happens mid-example."""
    with storage.pool.connection(), storage.pool.connection(), storage.pool.connection():
        pass
    return storage


@pytest.fixture
def pg(postgres_url):
    with PostgresStorage(postgres_url) as storage:
        yield warmed(storage)


# -- values: what the journal can hold, and the edges of each format -----------------------------------

temperatures = st.one_of(
    st.floats(-40.0, 80.0),
    st.integers(-40, 80).map(float),
    st.integers(-400, 800).map(lambda t: t / 10),  # a DHT22's tenths
    st.sampled_from([-0.0, 0.0, 5e-324, -5e-324, 1e-4, -1e-4, 9.999999999999999e-05, 1e-05, 0.1 + 0.2, -40.0, 80.0]),
)
humidities = st.one_of(
    st.floats(0.0, 100.0),
    st.integers(0, 100).map(float),
    st.sampled_from([0.0, -0.0, 100.0, 5e-324, 2.2250738585072014e-308, 1e-4, 0.00011, 99.99999999999999]),
)
times = st.one_of(
    st.integers(-3 * NS, 3 * NS),  # around 1970: negative times and their fractions
    st.integers(-10**18, 10**18),
    st.integers(MIN_NS, MAX_NS),
    st.sampled_from([MIN_NS, MIN_NS + 1, MAX_NS, -1, 0, 1, -NS, -NS - 1, -NS + 1, NS - 1, 1_764_000_000 * NS]),
)
names = st.from_regex(NODE_NAME, fullmatch=True)

_example = iter(range(10**9))


def fill(storage, names_drawn, rows) -> list[str]:
    """Register fresh nodes (names unique to this example, made of ``names_drawn``) and store
    ``rows`` of ``(node index, ts, t, h)``, one reading per node and instant; the names."""
    prefix = f"x{next(_example)}-"
    nodes = [(f"{prefix}{i}-{name}")[:64] for i, name in enumerate(names_drawn)]
    for name in nodes:
        storage.add_node(name, "h")
    seen, stored = set(), []
    for node, ts, t, h in rows:
        if (node, ts) not in seen:
            seen.add((node, ts))
            stored.append((nodes[node], ts, t, h))
    storage.add_readings(stored)
    return nodes


@st.composite
def journals_and_exports(draw):
    node_names = draw(st.lists(names, min_size=1, max_size=6))
    node_count = len(node_names)
    # shared timestamps: draw the times from a small pool now and then
    pool = draw(st.lists(times, min_size=1, max_size=5))
    ts = st.one_of(times, st.sampled_from(pool))
    rows = draw(st.lists(st.tuples(st.integers(0, node_count - 1), ts, temperatures, humidities), max_size=40))
    bound = st.one_of(st.none(), ts)
    args = {
        "fmt": draw(st.sampled_from(["csv", "ndjson"])),
        "start_ns": draw(bound),
        "stop_ns": draw(bound),
        "limit": draw(st.one_of(st.none(), st.integers(1, 45))),
        "header": draw(st.booleans()),
    }
    return node_names, rows, args, draw(st.booleans()), draw(st.one_of(st.none(), st.integers(0, 40))), draw(st.integers(0, 3))


@settings(max_examples=60, suppress_health_check=FUNCTION_FIXTURES)
@given(case=journals_and_exports())
def test_copy_export_equals_the_generic_export_byte_for_byte(pg, monkeypatch, case):
    node_names, rows, args, by_node, after_row, id_shift = case
    if args["start_ns"] is not None and args["stop_ns"] is not None and args["stop_ns"] <= args["start_ns"]:
        args["stop_ns"] = None
    nodes = fill(pg, node_names, rows)
    if by_node and nodes:
        args["node"] = nodes[0]
    if after_row is not None:  # resume after a real row (or just past it: an id no row has)
        every = [row for batch in pg.iter_readings(with_id=True) for row in batch]
        if every:
            ts, _, _, _, id_ = every[after_row % len(every)]
            args["after"] = (ts, id_ + id_shift)
    fast, generic = both_paths(pg, monkeypatch, **args)
    assert fast == generic


vbats = st.one_of(st.none(), temperatures, st.floats(0.001, 20.0), st.sampled_from([3.0, 3.3, 20.0, 1e-05, 0.1 + 0.2]))
ints = st.one_of(st.none(), st.integers(-127, 0), st.integers(0, 3_600_000), st.sampled_from([0, -2**31, 2**31 - 1]))
extras = st.builds(ReadingExtra, vbats, ints, ints, ints)


@settings(max_examples=40, suppress_health_check=FUNCTION_FIXTURES)
@given(rows=st.lists(st.tuples(times, temperatures, humidities, extras), min_size=1, max_size=30),
       fmt=st.sampled_from(["csv", "ndjson"]), cut=st.one_of(st.none(), st.integers(1, 30)))
def test_copy_export_with_telemetry_equals_the_generic_export(pg, monkeypatch, rows, fmt, cut):
    """The telemetry cells and keys the server writes are the generic path's, byte for byte, on every
    pass of a cursor: the first, and one over the readings that arrived since."""
    name = f"t{next(_example)}"
    pg.add_node(name, "h")
    stored = list({ts: (name, ts, t, h, extra) for ts, t, h, extra in rows}.values())
    pg.add_readings(stored[: len(stored) // 2])
    assert pg.export_lines(fmt, node=name, with_extra=True) is not None, "the COPY path was not taken"
    after = None if cut is None else history.plan(pg, None, node=name, limit=cut).resume
    pg.add_readings(stored[len(stored) // 2:])  # arrived since: a later pass, whatever their times
    fast, generic = both_paths(pg, monkeypatch, fmt=fmt, node=name, after=after)
    assert fast == generic
    delivered = len(stored) - min(cut or 0, len(stored) // 2)  # all but the first page
    assert fast.count("\n") - (fmt == "csv") == delivered


# -- the edges, whole -----------------------------------------------------------------------------


def test_edge_values_and_times_whole(pg, monkeypatch):
    pg.add_node("a", "h")
    rows = [
        (MIN_NS, 40.0, 0.0), (-NS - 1, -0.0, 100.0), (-1, 1e-4, 9.999999999999999e-05), (0, 1e-05, 5e-324),
        (1, -40.0, 0.1), (NS - 1, 23.4, 45.1), (MAX_NS, 0.1 + 0.2, 80.0),
    ]
    add_readings(pg, "a", [(ts, t, h) for ts, t, h in rows])
    fast, generic = both_paths(pg, monkeypatch, fmt="csv")
    assert fast == generic == (
        "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        "1677-09-21T00:12:43.145224192Z,a,40.0,0.0,,,,\r\n"
        "1969-12-31T23:59:58.999999999Z,a,-0.0,100.0,,,,\r\n"
        "1969-12-31T23:59:59.999999999Z,a,0.0001,9.999999999999999e-05,,,,\r\n"
        "1970-01-01T00:00:00.000000000Z,a,1e-05,5e-324,,,,\r\n"
        "1970-01-01T00:00:00.000000001Z,a,-40.0,0.1,,,,\r\n"
        "1970-01-01T00:00:00.999999999Z,a,23.4,45.1,,,,\r\n"
        "2262-04-11T23:47:16.854775807Z,a,0.30000000000000004,80.0,,,,\r\n"
    )
    fast, generic = both_paths(pg, monkeypatch, fmt="ndjson", limit=2)
    assert fast == generic == (
        '{"time": "1677-09-21T00:12:43.145224192Z", "node": "a", "temperature": 40.0, "humidity": 0.0}\n'
        '{"time": "1969-12-31T23:59:58.999999999Z", "node": "a", "temperature": -0.0, "humidity": 100.0}\n'
    )


def test_the_sessions_own_settings_change_nothing(postgres_url, monkeypatch):
    """A server or role whose defaults differ (``extra_float_digits = 0`` writes 15 digits,
    another DateStyle and TimeZone): the COPY sets what it relies on for its own transaction."""
    options = "-c extra_float_digits=0 -c DateStyle=SQL,DMY -c TimeZone=Asia/Kolkata -c IntervalStyle=sql_standard"
    url = f"{postgres_url}?options={options.replace(' ', '%20').replace('=', '%3D')}"
    with PostgresStorage(url) as storage:
        storage.add_node("a", "h")
        add_readings(storage, "a", [(-1, 0.1 + 0.2, 1 / 3), (1_764_000_000 * NS, 23.4, 5e-324)])
        fast, generic = both_paths(storage, monkeypatch, fmt="csv")
        assert fast == generic == (
            "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
            "1969-12-31T23:59:59.999999999Z,a,0.30000000000000004,0.3333333333333333,,,,\r\n"
            "2025-11-24T16:00:00.000000000Z,a,23.4,5e-324,,,,\r\n"
        )


@pytest.mark.parametrize("value", [
    1e15, -1e15, 1e15 + 0.125, 1234567890123456.8, 9999999999999998.0, 1e16, 1.5e16, 1e22, 1e300,
    -1.7976931348623157e308, 123456.789e3, math.nan, math.inf, -math.inf,
    # whole numbers from 1e16 on that PostgreSQL writes with more digits than repr (found by
    # tests/test_export.py's hypothesis test): 5.5455982195228864e+16 for 5.545598219522886e+16
    5.347155744980418e+16, 5.545598219522886e+16, 2.24114167653222e+17, -1.132878610615534e+17,
])
def test_values_no_reading_can_hold_are_written_as_python_writes_them(pg, monkeypatch, value):
    """Outside a sensor's range (journals filled by other means): |x| >= 1e15, where ``repr`` keeps
    the fixed form PostgreSQL leaves at 1e15, and the non-finite values."""
    pg.add_node("a", "h")
    add_readings(pg, "a", [(0, value, value)])
    for fmt in ("csv", "ndjson"):
        fast, generic = both_paths(pg, monkeypatch, fmt=fmt, header=False)
        assert fast == generic
    assert fast == json.dumps({"time": "1970-01-01T00:00:00.000000000Z", "node": "a",
                               "temperature": value, "humidity": value}) + "\n"


def test_a_name_outside_the_rule_is_written_as_the_generic_path_writes_it(pg, monkeypatch):
    """Only manual SQL (or a storage call that skips the CLI's check) makes such a name. CSV writes
    it as stored; NDJSON would need it escaped as ``json.dumps`` does (and a name could hold the mark
    of a number Python writes), so the generic path writes both."""
    name = 'back\\slash,comma "quoted" é\n'
    pg.add_node(name, "h")
    add_readings(pg, name, [(0, 1.0, 2.0)])
    assert "".join(export_chunks(pg, fmt="csv")) == (
        f"time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n1970-01-01T00:00:00.000000000Z,{name},1.0,2.0,,,,\r\n")
    assert pg.export_lines("csv") is None and pg.export_lines("ndjson") is None  # the generic path writes both
    assert "".join(export_chunks(pg, fmt="ndjson")) == json.dumps(
        {"time": "1970-01-01T00:00:00.000000000Z", "node": name, "temperature": 1.0, "humidity": 2.0}) + "\n"


def test_an_older_libpq_reads_the_lines_through_a_named_cursor(pg, monkeypatch):
    """libpq before 17 cannot stream rows in chunks; the same lines come through a named cursor."""
    pg.add_node("a", "h")
    add_readings(pg, "a", [(i * NS - 7 * NS, i / 4, 100.0 - i) for i in range(12_001)])
    streamed, _ = both_paths(pg, monkeypatch, fmt="csv", start_ns=-3 * NS, limit=11_000)
    monkeypatch.setattr("psycopg.pq.version", lambda: 160_000)
    counts = []
    fetched = "".join(export_chunks(pg, fmt="csv", start_ns=-3 * NS, limit=11_000, on_rows=counts.append))
    assert fetched == streamed and counts == [5000, 5000, 1000]


def test_a_removed_node_and_an_id_without_a_node_keep_their_names(pg, monkeypatch):
    pg.add_node("gone", "h")
    add_readings(pg, "gone", [(5, 1.5, 2.5)])
    pg.remove_node("gone")
    fast, generic = both_paths(pg, monkeypatch, fmt="csv")
    assert fast == generic == "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n1970-01-01T00:00:00.000000005Z,gone,1.5,2.5,,,,\r\n"


def test_progress_counts_every_row_in_chunks_of_thousands(pg):
    pg.add_node("a", "h")
    add_readings(pg, "a", [(i, 20.0, 50.0) for i in range(12_345)])
    counts = []
    chunks = list(export_chunks(pg, fmt="csv", on_rows=counts.append))
    assert counts == [5000, 5000, 2345]
    assert [chunk.count("\r\n") for chunk in chunks] == [1, 5000, 5000, 2345]


def test_the_first_chunk_comes_only_after_the_store_answered(postgres_factory):
    """The CSV header is not written before PostgreSQL answered the COPY: a server that stopped
    fails the export before anything is written."""
    server = postgres_factory()
    with PostgresStorage(server.new_database()) as storage:
        storage.add_node("a", "h")
        add_readings(storage, "a", [(0, 1.0, 2.0)])
        chunks = export_chunks(storage, fmt="csv")
        server.stop()
        with pytest.raises(StorageUnavailable):
            next(chunks)


def test_a_reader_that_stops_early_leaves_the_snapshot_usable(pg):
    """Closing the export mid-COPY (a reader gone) cancels the COPY; the snapshot it ran in still
    answers, and the storage keeps working."""
    pg.add_node("a", "h")
    add_readings(pg, "a", [(i, 20.0, 50.0) for i in range(20_000)])
    with pg.snapshot():
        chunks = export_chunks(pg, fmt="csv")
        next(chunks), next(chunks)
        chunks.close()
        assert pg.count_readings() == 20_000
    assert pg.count_readings_in("a") == 20_000


# -- tswarm export and GET /api/readings --------------------------------------------------------------


@pytest.fixture
def pg_journal(postgres_url):
    """A journal in PostgreSQL with nodes, readings around 1970 and shared timestamps; its URL."""
    with PostgresStorage(postgres_url) as storage:
        for name in ("attic", "cellar", "kitchen"):
            storage.add_node(name, "h")
        add_readings(storage, "kitchen", [(i * 7 * NS // 3 - 50 * NS, 21.0 + i / 10, float(i % 101)) for i in range(60)])
        add_readings(storage, "attic", [(i * 7 * NS // 3 - 50 * NS, -0.0 - i / 7, 100.0 - i) for i in range(0, 60, 2)])
        add_readings(storage, "cellar", [(-(i * NS) - 1, float(i), 1e-05 * i) for i in range(20)])
    return postgres_url


async def read_pages(client, query: dict) -> str:
    """Every page of ``query`` (with its limit), following the next cursor: the whole body."""
    body, query = "", dict(query)
    while True:
        resp = await client.get("/api/readings", params=query)
        assert resp.status == 200, await resp.text()
        text = await resp.text()
        body += text if not body or query.get("format") == "ndjson" else text.split("\r\n", 1)[1]
        cursor = resp.headers.get("X-Next-Cursor")
        if cursor is None:
            return body
        decode_cursor(cursor)
        query["cursor"] = cursor


api_queries = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from(["csv", "ndjson"]),
    "node": st.sampled_from(["attic", "cellar", "kitchen"]),
    "start": st.integers(-80, 100).map(str),
    "stop": st.integers(-40, 150).map(str),
    "limit": st.integers(1, 70).map(str),
})


@settings(max_examples=40, suppress_health_check=FUNCTION_FIXTURES)
@given(query=api_queries)
@example(query={"limit": "7"})
@example(query={"format": "ndjson", "limit": "1", "start": "-3"})
async def test_the_api_pages_are_the_same_bytes_on_both_paths(make_client, pg_journal, monkeypatch, query):
    if "start" in query and "stop" in query and int(query["stop"]) <= int(query["start"]):
        del query["stop"]
    client = await make_client(database_url=pg_journal)
    fast = await read_pages(client, query)
    with generic_path(monkeypatch):
        generic = await read_pages(client, query)
    assert fast == generic
    assert fast.count("\n") >= 1 or query.get("format") == "ndjson"


def test_tswarm_export_writes_the_same_bytes_on_both_paths(run, pg_journal, monkeypatch, tmp_path):
    monkeypatch.setenv("TSWARM_DATABASE_URL", pg_journal)
    outputs = []
    for path in (contextlib.nullcontext, lambda: generic_path(monkeypatch)):
        with path():
            for args in ((), ("--node", "attic", "--format", "ndjson"), ("--start", "-10", "--stop", "30")):
                out = tmp_path / f"out-{len(outputs)}"
                assert run("export", *args, "-o", str(out)).exit_code == 0
                outputs.append(out.read_bytes())
    assert outputs[:3] == outputs[3:]
    assert outputs[0].startswith(b"time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n1969-12-31T23:59:")
