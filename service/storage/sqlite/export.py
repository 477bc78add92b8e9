"""The export's lines from SQLite with fewer columns per row: the engine's ``export_lines``.

The generic export (service/export.py) reads eight columns per row (time, node, temperature,
humidity and the four telemetry cells) and formats them in Python. CPython's sqlite3 module pays
about 0.1 µs per column of every row (it releases and takes back the GIL around each
``sqlite3_column_type``), whatever the column holds: the four telemetry cells, empty in most
journals of before, cost as much as the time and the node together. Here a row comes as six
columns, and the line is what the generic path writes for the same row, byte for byte
(tests/test_export_lines.py compares both on random journals):

- ``ts``, the node's name (``COALESCE(nodes.name, '#' || node_id)``), ``temperature``,
  ``humidity``: as before, formatted by Python (:class:`tswarm.export.FloatText`: ``repr``,
  remembered; SQLite's own text of a float has 15 digits where ``repr`` has up to 17, and costs more).
- the *tail*: NULL when the reading came without telemetry (the common row of before), else the
  text SQLite writes for the integer cells (``rssi``, ``awake_ms``, ``lost``: SQLite's text of an
  INTEGER is ``str`` of the Python int) after ``vbat``'s place, each empty (CSV) or absent
  (NDJSON) when not sent, and ``vbat`` itself as a float beside it, as Python writes it. A
  telemetry cell that does not hold an integer (only SQL by hand stores one: SQLite keeps a text
  or a real in an INTEGER column) makes the tail a mark and the row's id, and that row is read
  again and written as the generic path writes it.

Rows are fetched 1,000 at a time (a fetch of 5,000 rows' objects leaves the CPU's cache and costs
about a tenth more per row) and handed on in chunks of about :data:`CHUNK_ROWS` lines.
"""
from __future__ import annotations

import sqlite3
from typing import Iterator, Optional

FETCH_ROWS = 1000
CHUNK_ROWS = 5000  # lines per chunk handed on, as many as the generic path's batches
MARK = "\x01"  # a tail that is a mark and a row id: that row is written by the generic path's rules
NAME = "COALESCE(nodes.name, '#' || readings.node_id)"
_INTS = ("rssi", "awake_ms", "lost")  # EXTRA_FIELDS after vbat: INTEGER columns
_ALL_INTEGERS = " AND ".join(f"typeof(readings.{c}) IN ('integer', 'null')" for c in _INTS)
_NO_INTS = " AND ".join(f"readings.{c} IS NULL" for c in _INTS)
TAILS = {
    "csv": " || ".join(f"',' || COALESCE(readings.{c}, '')" for c in _INTS),
    "ndjson": "''" + "".join(f""" || COALESCE(', "{c}": ' || readings.{c}, '')""" for c in _INTS),
}


def select(fmt: str) -> str:
    """The columns of a row: ``ts, name, temperature, humidity, vbat, tail`` (see the module's text)."""
    return (
        f"SELECT readings.ts, {NAME}, readings.temperature, readings.humidity, readings.vbat,"
        f" CASE WHEN {_NO_INTS} THEN NULL WHEN {_ALL_INTEGERS} THEN {TAILS[fmt]}"
        f" ELSE '{MARK}' || readings.id END"
    )


def line_chunks(conn: sqlite3.Connection, fmt: str, sql: str, params: list) -> Iterator[tuple[str, int]]:
    """``(text, rows)`` chunks of the lines of ``sql`` (made with :func:`select`), in the same
    snapshot as the caller's (the same connection)."""
    from ...export import FloatText, JsonText  # here: tswarm.export imports the storage package

    lines = _csv if fmt == "csv" else _ndjson
    floats, names = (FloatText(), None) if fmt == "csv" else (JsonText(), JsonText())
    cur = conn.execute(sql, params)
    try:
        parts: list[str] = []
        count = 0
        while rows := cur.fetchmany(FETCH_ROWS):
            parts.append(lines(conn, rows, floats, names))
            count += len(rows)
            if count >= CHUNK_ROWS:
                yield "".join(parts), count
                parts, count = [], 0
        if count:
            yield "".join(parts), count
    finally:
        cur.close()


def _csv(conn, rows: list, text, names=None) -> str:
    """The CSV lines of rows from :func:`select`; the time inline as service/export.py writes it, but
    from the whole seconds (``s``): one division fewer per row (floor division, before 1970 too)."""
    from ...timefmt import MINUTES as minutes, SECOND_TEXT as seconds

    return "".join([
        f"{minutes[(s := ts // 1_000_000_000) // 60]}{seconds[s % 60]}"
        f"{'%09d' % (ts % 1_000_000_000)}Z,{name},{text[t]},{text[h]},,,,\r\n"
        if v is None and tail is None else
        f"{minutes[(s := ts // 1_000_000_000) // 60]}{seconds[s % 60]}"
        f"{'%09d' % (ts % 1_000_000_000)}Z,{name},{text[t]},{text[h]},"
        + (_odd_csv(conn, tail, text) if tail is not None and tail[0] == MARK
           else ('' if v is None else text[v]) + (',,,' if tail is None else tail))
        + "\r\n"
        for ts, name, t, h, v, tail in rows
    ])


def _ndjson(conn, rows: list, floats, names) -> str:
    """The NDJSON lines of rows from :func:`select`, as service/export.py's ``ndjson_lines``."""
    from ...timefmt import MINUTES as minutes, SECOND_TEXT as seconds

    out = []
    append = out.append
    for ts, name, t, h, v, tail in rows:
        head = (
            f'{{"time": "{minutes[(s := ts // 1_000_000_000) // 60]}{seconds[s % 60]}'
            f'{"%09d" % (ts % 1_000_000_000)}Z", "node": {names[name]}, '
            f'"temperature": {floats[t]}, "humidity": {floats[h]}'
        )
        if v is None and tail is None:
            append(head + "}\n")
        elif tail is not None and tail[0] == MARK:
            append(head + _odd_ndjson(conn, tail, floats) + "}\n")
        else:
            append(head + ("" if v is None else f', "vbat": {floats[v]}') + (tail or "") + "}\n")
    return "".join(out)


def _telemetry(conn, tail: str) -> tuple:
    return conn.execute(
        "SELECT vbat, rssi, awake_ms, lost FROM readings WHERE id = ?", (int(tail[1:]),)
    ).fetchone()


def _odd_csv(conn, tail: str, text) -> str:
    """The telemetry cells of a row whose integer cells hold something else, as csv_lines writes them."""
    v, r, a, n = _telemetry(conn, tail)
    return f"{'' if v is None else text[v]},{'' if r is None else r},{'' if a is None else a},{'' if n is None else n}"


def _odd_ndjson(conn, tail: str, floats) -> str:
    """The telemetry keys of such a row, as ndjson_lines writes them."""
    from ...export import _json_int

    v, r, a, n = _telemetry(conn, tail)
    return (
        ("" if v is None else f', "vbat": {floats[v]}')
        + ("" if r is None else f', "rssi": {_json_int(r)}')
        + ("" if a is None else f', "awake_ms": {_json_int(a)}')
        + ("" if n is None else f', "lost": {_json_int(n)}')
    )
