"""The export's lines from SQLite with fewer columns per row: the engine's ``export_lines``.

The generic export (service/export.py) reads eight columns per row (time, node, temperature,
humidity and the four telemetry cells) and formats them in Python. CPython's sqlite3 module pays
about 0.1 µs per column of every row (it lets go of the GIL and takes it back around each
``sqlite3_column_type``), whatever the column holds: the four telemetry cells, empty in the readings
of before, cost as much as the time and the node together. So a pass is read in two ways:

- *lean*, while the readings come without telemetry: four columns, ``ts``, ``node_id``,
  ``temperature``, ``humidity``, where SQLite gives NULL for ``ts`` when a reading has telemetry
  (four ``IS NULL`` in SQLite cost less than one column in Python). The line is the generic
  path's for a row without telemetry, formatted as it does (the floats by
  :class:`tswarm.export.FloatText`: SQLite's own text of a float has 15 digits where ``repr``
  has up to 17, and costs more). The first NULL time stops the line writer (``None // 10**9``
  raises: no test per row). The node's name comes from :class:`NodeText`, looked up once per
  node, not from the JOIN for every row: a ``str`` a row built by SQLite
  (``COALESCE(nodes.name, '#' || node_id)``) cost about a tenth of the CPU of a row, an ``int``
  looked up in a dict less (issue 16, measured in benchmarks/README.md).
- *full*, from the first reading with telemetry on: the same query with the eight columns,
  ``OFFSET`` the rows written already (in the same read transaction: the same rows in the same
  order, ``ORDER BY ts, id``), written by the generic path's :func:`tswarm.export.csv_lines` and
  :func:`~tswarm.export.ndjson_lines` themselves. Readings with telemetry cost what they cost
  before (text built by SQLite for them cost more: 1.8 µs a row against 1.1 µs for the eight
  columns, measured).

Rows are fetched 1,000 at a time (a fetch of 5,000 rows' objects leaves the CPU's cache and costs
about a tenth more per row) and handed on in chunks of about :data:`CHUNK_ROWS` lines.
tests/test_export_lines.py compares the lines with the generic path's on random journals.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Iterator, Optional

FETCH_ROWS = 1000
CHUNK_ROWS = 5000  # lines per chunk handed on, as many as the generic path's batches
FORMATS = ("csv", "ndjson")
MAX_NODES = 100_000  # names remembered per export (tswarm.export.FloatText.MAX_ENTRIES)
NAME = "COALESCE(nodes.name, '#' || readings.node_id)"
_EXTRA = ("vbat", "rssi", "awake_ms", "lost")  # storage.interface.EXTRA_FIELDS, in its order
LEAN = (
    "SELECT CASE WHEN " + " AND ".join(f"readings.{c} IS NULL" for c in _EXTRA) + " THEN readings.ts END,"
    " readings.node_id, readings.temperature, readings.humidity"
)
FULL = (
    f"SELECT readings.ts, {NAME}, readings.temperature, readings.humidity"
    + "".join(f", readings.{c}" for c in _EXTRA)
)


def line_chunks(
    conn: sqlite3.Connection, fmt: str, rest: str, params: list, limit: Optional[int]
) -> Iterator[tuple[str, int]]:
    """``(text, rows)`` chunks of the lines of the rows ``FROM ... WHERE ... ORDER BY ...`` (``rest``)
    of ``params``, at most ``limit`` rows, read on ``conn`` (the caller's snapshot, or the read
    transaction the two statements share)."""
    from ...export import FloatText, csv_lines, ndjson_lines  # here: tswarm.export imports the storage package

    lean = _lean_csv if fmt == "csv" else _lean_ndjson
    full = csv_lines if fmt == "csv" else ndjson_lines
    floats = FloatText() if fmt == "csv" else _json_text()
    cur = conn.execute(LEAN + rest + ("" if limit is None else " LIMIT ?"), params + ([] if limit is None else [limit]))
    names = NodeText(conn, as_json=fmt == "ndjson")
    parts: list[str] = []
    count = written = 0
    try:
        while rows := cur.fetchmany(FETCH_ROWS):
            try:
                parts.append(lean(rows, floats, names))
            except TypeError:
                first = next((i for i, row in enumerate(rows) if row[0] is None), None)
                if first is None:  # a time that is no integer (SQL by hand): the generic path fails alike
                    raise
                parts.append(lean(rows[:first], floats, names))
                count += first
                written += first
                # the full rows from there on, the first statement still open: the same snapshot
                full_cur = conn.execute(FULL + rest + " LIMIT ? OFFSET ?", params + [
                    -1 if limit is None else limit - written, written])
                cur.close()
                cur = full_cur
                text = floats if fmt == "csv" else None
                while rows := cur.fetchmany(FETCH_ROWS):
                    parts.append(full(rows, text))
                    count += len(rows)
                    if count >= CHUNK_ROWS:
                        yield "".join(parts), count
                        parts, count = [], 0
                break
            count += len(rows)
            written += len(rows)
            if count >= CHUNK_ROWS:
                yield "".join(parts), count
                parts, count = [], 0
        if count:
            yield "".join(parts), count
    finally:
        cur.close()


class NodeText(dict):
    """A node's id → the text its lines give as its name: the JOIN's own ``COALESCE(nodes.name, '#' ||
    node_id)`` (NDJSON: as a JSON string), asked of SQLite once per node and export, so that a real or a
    text in ``node_id`` (SQL by hand) reads as the JOIN reads it. tswarm neither renames nor deletes a
    node's row, so a name looked up after the statement's last row is the name the JOIN would have read."""

    def __init__(self, conn: sqlite3.Connection, as_json: bool = False):
        super().__init__()
        self.conn, self.as_json = conn, as_json

    def __missing__(self, node_id):
        name = self.conn.execute(
            "SELECT COALESCE((SELECT name FROM nodes WHERE id = ?1), '#' || ?1)", (node_id,)).fetchone()[0]
        text = json.dumps(name) if self.as_json else name
        if len(self) < MAX_NODES:  # memory flat whatever a journal written by hand holds
            self[node_id] = text
        return text


def _json_text():
    from ...export import JsonText

    return JsonText()


def _lean_csv(rows: list, text, names) -> str:
    """The CSV lines of lean rows, as :func:`tswarm.export.csv_lines` writes a row without telemetry;
    the time from its whole seconds ``s`` (one division fewer a row; floor division: before 1970 too)."""
    from ...timefmt import MINUTES as minutes, SECOND_TEXT as seconds

    return "".join([
        f"{minutes[(s := ts // 1_000_000_000) // 60]}{seconds[s % 60]}"
        f"{'%09d' % (ts % 1_000_000_000)}Z,{names[node]},{text[t]},{text[h]},,,,\r\n"
        for ts, node, t, h in rows
    ])


def _lean_ndjson(rows: list, floats, names) -> str:
    """The NDJSON lines of lean rows, as :func:`tswarm.export.ndjson_lines` writes a row without telemetry."""
    from ...timefmt import MINUTES as minutes, SECOND_TEXT as seconds

    return "".join([
        f'{{"time": "{minutes[(s := ts // 1_000_000_000) // 60]}{seconds[s % 60]}'
        f'{"%09d" % (ts % 1_000_000_000)}Z", "node": {names[node]}, '
        f'"temperature": {floats[t]}, "humidity": {floats[h]}}}\n'
        for ts, node, t, h in rows
    ])
