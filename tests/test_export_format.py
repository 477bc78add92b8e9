"""The CSV lines export.py writes by hand are exactly what csv.writer writes for the same rows."""
import csv
import io

from hypothesis import given, strategies as st

from tswarm.export import export_chunks
from tswarm.names import NODE_NAME
from tswarm.storage import open_storage
from tswarm.timefmt import rfc3339

names = st.from_regex(NODE_NAME, fullmatch=True)
values = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(st.integers(0, 2**52), names, values, values), min_size=1, max_size=20))
def test_csv_rows_equal_csv_writer_output(tmp_path_factory, rows):
    data_dir = tmp_path_factory.mktemp("fmt")
    with open_storage(data_dir) as journal:
        ids = {}
        for _, name, _, _ in rows:
            if name not in ids:
                journal.add_node(name, "h")
                ids[name] = journal.node_auth(name).id
        journal.conn.executemany(
            "INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)",
            [(ids[name], ts * 1000 + i, t, h) for i, (ts, name, t, h) in enumerate(rows)],
        )
        # SQLite keeps a REAL with no fraction as an integer, so -0.0 reads back as 0.0 (+ 0.0 does the same).
        ordered = sorted((ts * 1000 + i, i, name, t + 0.0, h + 0.0) for i, (ts, name, t, h) in enumerate(rows))
        expected = io.StringIO()
        writer = csv.writer(expected)
        writer.writerow(["time", "node", "temperature", "humidity"])
        writer.writerows((rfc3339(ts), name, t, h) for ts, _, name, t, h in ordered)
        assert "".join(export_chunks(journal, fmt="csv")) == expected.getvalue()


def test_float_text_keeps_the_sign_of_zero_and_the_exact_repr():
    from tswarm.export import FloatText

    text = FloatText()
    assert [text[v] for v in (-0.0, 0.0, -0.0, 23.4, 23.4, 1e-05, 0.1 + 0.2)] == \
        ["-0.0", "0.0", "-0.0", "23.4", "23.4", "1e-05", "0.30000000000000004"]


def test_the_first_chunk_comes_only_after_the_query_ran(tmp_path):
    """A query that cannot run fails before the CSV header, so a reader gets an error, not a header
    alone that looks like an empty export. (A closed connection is a journal that fails for real.)"""
    import sqlite3

    import pytest

    with open_storage(tmp_path / "data") as journal:
        chunks = export_chunks(journal, fmt="csv")
        journal.conn.close()
        with pytest.raises(sqlite3.ProgrammingError):
            next(chunks)
