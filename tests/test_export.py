"""service/export.py: the rows of an export (CSV and NDJSON, whole), its cursor tokens, and the one
code path `tswarm export` and ``GET /api/readings`` share. The CLI's own behaviour (exit codes, -o,
error lines, the progress bar) is tested in tests/test_cli.py; the HTTP route in tests/test_readers.py."""
from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from hypothesis import given, strategies as st

from tswarm.export import decode_cursor, encode_cursor, export_chunks
from tswarm.storage import open_storage
from tswarm.storage.interface import ReadingExtra
from tswarm.names import NODE_NAME
from tswarm.timefmt import rfc3339
from tests.conftest import ALL_CSV, T0, fill_a_and_b, fresh_journal
from tests.servers import ENGINE, run_cli

pytestmark = pytest.mark.engines


# -- the rows, whole ------------------------------------------------------------------------------


names = st.from_regex(NODE_NAME, fullmatch=True)


values = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(st.integers(0, 2**52), names, values, values), min_size=1, max_size=20))
def test_csv_rows_equal_csv_writer_output(tmp_path_factory, rows):
    with fresh_journal(tmp_path_factory) as journal:
        for name in dict.fromkeys(name for _, name, _, _ in rows):
            journal.add_node(name, "h")
        journal.add_readings([(name, ts * 1000 + i, t, h) for i, (ts, name, t, h) in enumerate(rows)])  # in this order
        # SQLite keeps a REAL with no fraction as an integer, so -0.0 reads back as 0.0 (+ 0.0 does the same);
        # PostgreSQL keeps the sign (a node's reading never has one: service/payload.py makes -0.0 0.0).
        zero = 0.0 if ENGINE.name == "sqlite" else -0.0  # x + -0.0 is x, even for -0.0
        ordered = sorted((ts * 1000 + i, i, name, t + zero, h + zero) for i, (ts, name, t, h) in enumerate(rows))
        expected = io.StringIO()
        writer = csv.writer(expected)
        writer.writerow(["time", "node", "temperature", "humidity", "vbat", "rssi", "awake_ms", "lost"])
        writer.writerows((rfc3339(ts), name, t, h, "", "", "", "") for ts, _, name, t, h in ordered)
        assert "".join(export_chunks(journal, fmt="csv")) == expected.getvalue()


extras = st.builds(
    ReadingExtra,
    st.one_of(st.none(), st.floats(0.001, 20.0)), st.one_of(st.none(), st.integers(-127, 0)),
    st.one_of(st.none(), st.integers(0, 3_600_000)), st.one_of(st.none(), st.integers(0, 1_000_000)),
)


@given(st.lists(st.tuples(names, values, values, extras), min_size=1, max_size=20))
def test_telemetry_cells_equal_csv_writer_output_and_ndjson_keys_only_when_sent(tmp_path_factory, rows):
    with fresh_journal(tmp_path_factory) as journal:
        for name in dict.fromkeys(name for name, _, _, _ in rows):
            journal.add_node(name, "h")
        zero = 0.0 if ENGINE.name == "sqlite" else -0.0  # as above: SQLite reads -0.0 back as 0.0
        journal.add_readings([(name, T0 + i, t, h, extra) for i, (name, t, h, extra) in enumerate(rows)])
        expected = io.StringIO()
        writer = csv.writer(expected)
        writer.writerow(["time", "node", "temperature", "humidity", "vbat", "rssi", "awake_ms", "lost"])
        writer.writerows((rfc3339(T0 + i), name, t + zero, h + zero, *("" if v is None else v for v in extra))
                         for i, (name, t, h, extra) in enumerate(rows))
        assert "".join(export_chunks(journal, fmt="csv")) == expected.getvalue()
        lines = "".join(export_chunks(journal, fmt="ndjson")).splitlines()
        assert [json.loads(line) for line in lines] == [
            {"time": rfc3339(T0 + i), "node": name, "temperature": t + zero, "humidity": h + zero,
             **{k: v for k, v in extra._asdict().items() if v is not None}}
            for i, (name, t, h, extra) in enumerate(rows)
        ]
        assert [list(json.loads(line)) for line in lines] == [  # the keys in their order, only those sent
            ["time", "node", "temperature", "humidity", *(k for k, v in extra._asdict().items() if v is not None)]
            for _, _, _, extra in rows
        ]


def test_a_reading_with_telemetry_exported_whole(journal):
    journal.add_node("porch", "h")
    journal.add_readings([
        ("porch", T0, 21.5, 40.0, ReadingExtra()),
        ("porch", T0 + 300 * 10**9, 21.4, 40.5, ReadingExtra(vbat=3.71, rssi=-67, awake_ms=1840)),
        ("porch", T0 + 600 * 10**9, 21.4, 40.6, ReadingExtra(vbat=3.0, rssi=0, awake_ms=0, lost=3)),
    ])
    assert "".join(export_chunks(journal)) == (
        "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        "2025-11-24T16:00:00.000000000Z,porch,21.5,40.0,,,,\r\n"
        "2025-11-24T16:05:00.000000000Z,porch,21.4,40.5,3.71,-67,1840,\r\n"
        "2025-11-24T16:10:00.000000000Z,porch,21.4,40.6,3.0,0,0,3\r\n"
    )
    assert "".join(export_chunks(journal, fmt="ndjson")) == (
        '{"time": "2025-11-24T16:00:00.000000000Z", "node": "porch", "temperature": 21.5, "humidity": 40.0}\n'
        '{"time": "2025-11-24T16:05:00.000000000Z", "node": "porch", "temperature": 21.4, "humidity": 40.5,'
        ' "vbat": 3.71, "rssi": -67, "awake_ms": 1840}\n'
        '{"time": "2025-11-24T16:10:00.000000000Z", "node": "porch", "temperature": 21.4, "humidity": 40.6,'
        ' "vbat": 3.0, "rssi": 0, "awake_ms": 0, "lost": 3}\n'
    )


def test_float_text_keeps_the_sign_of_zero_and_the_exact_repr():
    from tswarm.export import FloatText

    text = FloatText()
    assert [text[v] for v in (-0.0, 0.0, -0.0, 23.4, 23.4, 1e-05, 0.1 + 0.2)] == \
        ["-0.0", "0.0", "-0.0", "23.4", "23.4", "1e-05", "0.30000000000000004"]



def test_export_csv_whole(run, data_dir):
    fill_a_and_b(data_dir)
    assert run("export").output == (
        "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\n"
        "2025-11-24T16:00:00.000000000Z,a,21.5,40.0,,,,\n"
        "2025-11-24T16:00:00.000000001Z,b,-3.2,80.0,,,,\n"
        "2025-11-24T16:01:00.000000000Z,a,22.0,41.5,,,,\n"
    )



def test_export_stop_is_exclusive_and_epoch_seconds_work(run, data_dir):
    fill_a_and_b(data_dir)
    lines = run("export", "--start", "1764000000", "--stop", "1764000060").output.splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["a", "b"]



@pytest.mark.engines("sqlite")
def test_the_first_chunk_comes_only_after_the_query_ran(tmp_path):
    """A query that cannot run fails before the CSV header, so a reader gets an error, not a header
    alone that looks like an empty export. (A closed connection is a journal that fails for real;
    closed here is SQLite's own connection object, which the PostgreSQL engine does not have.)"""
    import sqlite3

    import pytest

    with open_storage(tmp_path / "data") as journal:
        chunks = export_chunks(journal, fmt="csv")
        journal.conn.close()
        with pytest.raises(sqlite3.ProgrammingError):
            next(chunks)


# -- cursor tokens ------------------------------------------------------------------------------


def test_cursor_tokens_round_trip_and_refuse_anything_else():
    assert decode_cursor(encode_cursor((T0, 42))) == (T0, 42)
    assert decode_cursor(encode_cursor((-5, 0))) == (-5, 0)
    for bad in ("", "abc", base64.urlsafe_b64encode(b"r1.x.1").decode(), "!!!!"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_a_cursor_token_is_taken_only_as_handed_out_not_padded_or_with_characters_base64_skips():
    """base64 decoding skips white space and other characters and takes padding: those were the same
    cursor as the token handed out. Only that token is (docs/api.md: any other form is a 400)."""
    token = encode_cursor((T0, 42))
    assert "=" not in token and decode_cursor(token) == (T0, 42)
    for bad in (token + "=", token + "==", token + " ", " " + token, token[:4] + "\n" + token[4:], token + "!", token + "+"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


async def test_a_zone_offsets_plus_typed_into_the_url_is_an_offset_not_a_space(three_nodes, make_client):
    """A query's '+' is a space, so ``start=2025-11-24T17:01:40+01:00`` typed as is (curl, a browser)
    came as '... 01:00' and was a 400; it is the time docs/api.md shows, as %2B is."""
    from yarl import URL

    client = await make_client()
    expected = ALL_CSV.split("\r\n", 2)[0] + "\r\n" + ALL_CSV.split("\r\n", 2)[2]  # from attic's 16:01:40 on
    for start in ("2025-11-24T17:01:40+01:00", "2025-11-24T17:01:40%2B01:00", "2025-11-24+17:01:40+0100"):
        resp = await client.get(URL(f"/api/readings?start={start}", encoded=True))
        assert (resp.status, await resp.text()) == (200, expected), start
    resp = await client.get(URL("/api/readings?start=2025-11-24T17:01:40+25:00", encoded=True))
    assert (resp.status, (await resp.json())["error"]) == (400, "bad_parameter")


# -- one code path for the CLI and the API ----------------------------------------------------------


async def test_cli_export_and_the_api_give_the_same_bytes(three_nodes, data_dir, make_client, tmp_path):
    out = tmp_path / "out.csv"
    run_cli(data_dir, "export", "-o", str(out))
    assert out.read_bytes().decode() == ALL_CSV
    client = await make_client()  # the same data dir
    assert await (await client.get("/api/readings")).text() == ALL_CSV
    assert run_cli(data_dir, "export").stdout.replace("\r\n", "\n") == ALL_CSV.replace("\r\n", "\n")
