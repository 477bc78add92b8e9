"""service/export.py's lines: byte for byte what the export wrote before it formatted its times inline
and its NDJSON as text (issue 16). The implementation of before is kept below as it was (with the
``rfc3339`` of before: ``time.gmtime`` + ``time.strftime``), and both write the same random rows:
any time tswarm can hold (before 1970, the 64-bit edges, leap days), any name, any float, telemetry
sent or not; then whole exports of a real journal of each engine, CSV and NDJSON."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from tswarm.export import FloatText, csv_lines, export_chunks, ndjson_lines
from tswarm.names import NODE_NAME
from tswarm.storage.interface import EXTRA_FIELDS, ReadingExtra
from tswarm.timefmt import MAX_NS, MIN_NS
from tests.conftest import fresh_journal
from tests.test_timefmt import rfc3339_before, times


# -- the implementation of before (service/export.py at issue 16), unchanged but for rfc3339 ---------------


def csv_lines_before(rows: list, text=None) -> str:
    text = FloatText() if text is None else text
    return "".join([
        f"{rfc3339_before(ts)},{name},{text[t]},{text[h]},,,,\r\n"
        if v is None and r is None and a is None and n is None else
        f"{rfc3339_before(ts)},{name},{text[t]},{text[h]},{'' if v is None else text[v]},{'' if r is None else r},"
        f"{'' if a is None else a},{'' if n is None else n}\r\n"
        for ts, name, t, h, v, r, a, n in rows
    ])


def ndjson_lines_before(rows: list, text=None) -> str:
    dumps = json.dumps
    out = []
    for ts, name, t, h, *extra in rows:
        record = {"time": rfc3339_before(ts), "node": name, "temperature": t, "humidity": h}
        for key, value in zip(EXTRA_FIELDS, extra):
            if value is not None:
                record[key] = value
        out.append(dumps(record) + "\n")
    return "".join(out)


# -- rows handed to the line writers ---------------------------------------------------------------

node_names = st.one_of(
    st.from_regex(NODE_NAME, fullmatch=True),
    st.integers(1, 2**63 - 1).map(lambda i: f"#{i}"),  # a reading whose node row is gone
    st.text(max_size=12),  # a name written by hand in SQL: NDJSON escapes it as json.dumps does
)
any_floats = st.floats()  # NaN and the infinities too (PostgreSQL keeps them), -0.0, subnormals
# What a REAL column gives back (a float, or text SQLite could not make a number), and an INTEGER one.
real_cells = st.one_of(any_floats, st.floats(-50, 120).map(lambda x: round(x, 1)))
integer_cells = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=5), st.booleans())
rows = st.tuples(
    times, node_names, real_cells, real_cells,
    st.one_of(st.none(), real_cells), st.one_of(st.none(), integer_cells),
    st.one_of(st.none(), integer_cells), st.one_of(st.none(), integer_cells),
)
batches = st.lists(st.lists(rows, max_size=30), max_size=4)


@settings(max_examples=300, deadline=None)
@given(batches)
def test_csv_lines_write_what_they_wrote_before(parts):
    text, text_before = FloatText(), FloatText()  # one per export, shared by its batches
    for part in parts:
        assert csv_lines(part, text) == csv_lines_before(part, text_before)
        assert csv_lines(part) == csv_lines_before(part)



@settings(max_examples=300, deadline=None)
@given(batches)
def test_ndjson_lines_write_what_they_wrote_before(parts):
    for part in parts:
        assert ndjson_lines(part, FloatText()) == ndjson_lines_before(part)


def test_nan_and_infinities_as_before():
    row = (0, "a", math.nan, math.inf, -math.inf, None, None, None)
    assert csv_lines([row]) == csv_lines_before([row]) == "1970-01-01T00:00:00.000000000Z,a,nan,inf,-inf,,,\r\n"
    assert ndjson_lines([row]) == ndjson_lines_before([row])
    assert '"temperature": NaN, "humidity": Infinity, "vbat": -Infinity}' in ndjson_lines([row])


# -- whole exports of a real journal --------------------------------------------------------------------

extras = st.builds(
    ReadingExtra,
    st.one_of(st.none(), st.floats(0.001, 20.0)), st.one_of(st.none(), st.integers(-127, 0)),
    st.one_of(st.none(), st.integers(0, 3_600_000)), st.one_of(st.none(), st.integers(0, 1_000_000)),
)
stored = st.lists(
    st.tuples(times.filter(lambda ts: ts < MAX_NS),  # stop is exclusive: a reading at MAX_NS is never read
              st.from_regex(NODE_NAME, fullmatch=True), st.floats(allow_nan=False, allow_infinity=False),
              st.floats(-50, 120).map(lambda x: round(x, 1)), extras),
    min_size=1, max_size=25, unique_by=lambda row: row[0],
)


@pytest.mark.engines
@settings(max_examples=25, deadline=None)
@given(stored)
def test_a_whole_export_is_what_it_was_before(tmp_path_factory, readings):
    with fresh_journal(tmp_path_factory) as journal:
        for name in dict.fromkeys(name for _, name, _, _, _ in readings):
            journal.add_node(name, "h")
        journal.add_readings([(name, ts, t, h, extra) for ts, name, t, h, extra in readings])
        rows = [row for batch in journal.iter_readings(with_extra=True) for row in batch]
        assert len(rows) == len(readings)
        header = "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        assert "".join(export_chunks(journal, fmt="csv")) == header + csv_lines_before(rows)
        assert "".join(export_chunks(journal, fmt="ndjson")) == ndjson_lines_before(rows)


# -- SQLite's lean rows (service/storage/sqlite/export.py), with cells written by hand in SQL ----------------

# What SQLite can hold in each column once SQL by hand wrote it: a REAL column keeps a text that is no
# number (NaN is stored as NULL, which NOT NULL refuses), an INTEGER one a real or a text.
hand_reals = st.one_of(st.floats(allow_nan=False), st.floats(-50, 120).map(lambda x: round(x, 1)), st.just(-0.0),
                       st.floats(1e15, 1e300), st.text(max_size=4))
hand_integers = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=5))
no_telemetry = st.tuples(st.none(), st.none(), st.none(), st.none())
# A node id as SQL by hand can write it: 1-3 have a row, the rest none; a whole real or a text that is a
# number SQLite stores as the integer, any other real or text stays one and matches no node's row.
hand_node_ids = st.one_of(
    st.integers(1, 4), st.sampled_from([2.0, 3.5, "3", " 2 ", "3.0", "x", "#1", "", -1, 0, 2**63 - 1, -(2**63), 1e20]),
    st.floats(allow_nan=False), st.text(max_size=4), st.integers(),
).filter(lambda node_id: not isinstance(node_id, int) or -(2**63) <= node_id < 2**63)
hand_rows = st.lists(
    st.tuples(times.filter(lambda ts: MIN_NS <= ts < MAX_NS), hand_node_ids, hand_reals, hand_reals)
    .flatmap(lambda row: st.one_of(no_telemetry, st.tuples(st.one_of(st.none(), hand_reals), hand_integers,
                                                           hand_integers, hand_integers)).map(lambda extra: row + extra)),
    min_size=1, max_size=30, unique_by=lambda row: row[0],  # (node_id, ts) is unique: 2.0 is stored as 2
)
hand_names = st.lists(st.one_of(st.from_regex(NODE_NAME, fullmatch=True), st.text(min_size=1, max_size=8)),
                      min_size=3, max_size=3, unique=True)  # node 4 has no row: its readings say "#4"


def write_by_hand(journal, names: list, readings: list) -> list:
    """``readings`` (ts, node id, temperature, humidity, vbat, rssi, awake_ms, lost) written in SQL;
    the rows ``iter_readings`` reads back."""
    conn = journal.conn
    for node_id, name in enumerate(names, 1):
        conn.execute("INSERT INTO nodes (id, name, registered_at) VALUES (?, ?, 0)", (node_id, name))
    conn.executemany(
        "INSERT INTO readings (ts, node_id, temperature, humidity, vbat, rssi, awake_ms, lost)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", readings)
    conn.commit()
    return [row for batch in journal.iter_readings(with_extra=True) for row in batch]


@pytest.mark.engines("sqlite")
@settings(max_examples=80, deadline=None)
@given(hand_rows, hand_names, st.sampled_from(["csv", "ndjson"]), st.one_of(st.none(), st.integers(1, 35)))
def test_sqlite_lines_are_the_generic_lines_for_any_cell(tmp_path_factory, readings, names, fmt, limit):
    """SQLite's own lines (four columns a row until the first reading with telemetry, the eight of
    before from there on) against the rows of ``iter_readings`` written by the code of before, for
    every kind of value a journal written by hand can hold, readings with and without telemetry in
    any order, with a limit or without."""
    with fresh_journal(tmp_path_factory) as journal:
        rows = write_by_hand(journal, names, readings)[:limit]
        before = csv_lines_before(rows) if fmt == "csv" else ndjson_lines_before(rows)
        chunks = journal.export_lines(fmt, with_extra=True, limit=limit)
        assert chunks is not None  # the fast path is the one tested
        chunks = list(chunks)
        assert "".join(text for text, _ in chunks) == before
        assert sum(n for _, n in chunks) == len(rows)
        if limit is None:
            header = "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n" if fmt == "csv" else ""
            assert "".join(export_chunks(journal, fmt=fmt)) == header + before


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("limit", [None, 3000, 6001])
def test_sqlite_lines_across_fetches_chunks_and_the_switch(tmp_path_factory, limit):
    """More rows than a fetch and a chunk hold, the first 2,345 without telemetry and the rest with:
    every line once, in order, in chunks of about CHUNK_ROWS lines (the API hands one chunk at a time
    to the socket), the lean rows and the full ones meeting in the middle of a fetch."""
    from tswarm.storage.sqlite.export import CHUNK_ROWS, FETCH_ROWS

    n = CHUNK_ROWS + FETCH_ROWS + 7
    with fresh_journal(tmp_path_factory) as journal:
        journal.add_node("a", "h")
        journal.add_readings([
            ("a", i * 10**9 - 5 * 10**9, 20.5, 50.0, ReadingExtra(3.712 if i % 2 else None, -60, None, 0) if i >= 2345
             else ReadingExtra()) for i in range(n)
        ])
        rows = [row for batch in journal.iter_readings(with_extra=True, limit=limit) for row in batch]
        chunks = list(journal.export_lines("csv", with_extra=True, limit=limit))
        assert len(chunks) == (1 if len(rows) < CHUNK_ROWS else 2) and all(CHUNK_ROWS <= count < CHUNK_ROWS + FETCH_ROWS for _, count in chunks[:-1])
        assert sum(count for _, count in chunks) == len(rows) == min(n, limit or n)
        assert "".join(text for text, _ in chunks) == csv_lines_before(rows)
        assert "1969-12-31T23:59:55.000000000Z,a,20.5,50.0,,,,\r\n" in chunks[0][0]
        assert ",a,20.5,50.0,3.712,-60,,0\r\n" in chunks[0][0] and ",a,20.5,50.0,,-60,,0\r\n" in chunks[0][0]
