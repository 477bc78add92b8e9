"""The export's lines written by PostgreSQL itself: ``SELECT <line> ... ORDER BY ts, id``.

The generic export (service/export.py) reads rows and formats each one in Python; here the server
formats each row's whole line and the client only joins them, a few thousand per chunk, streamed
(``cursor.stream`` in chunks: the server keeps writing while a chunk is handed on), so memory stays
flat. ``COPY (SELECT <line> ...) TO STDOUT`` gives the same lines, but psycopg hands a COPY over
one row per call: 0.9–1.1 µs of client CPU per line against 0.25 µs for the streamed rows, on
the same machine (benchmarks/README.md). The text is byte for byte what the generic path writes for
the same rows (tests/test_export_copy.py compares both on random journals):

- **times**: :func:`tswarm.timefmt.rfc3339`, ``2026-11-25T11:04:19.123456789Z``. Seconds and the
  nanosecond part by floor division (a time before 1970 has a negative ``ts``, and its fraction
  still counts up from the second before: ``-1`` is ``1969-12-31T23:59:59.999999999Z``), written
  without overflow down to the smallest 64-bit time; the date by ``to_timestamp`` in UTC (the
  proleptic Gregorian calendar, as Python's ``time.gmtime``).
- **floats**: Python's ``repr`` (CSV) and ``json.dumps`` (NDJSON). PostgreSQL's ``float8`` output
  with ``extra_float_digits = 1`` (set here, whatever the server's default) is the shortest text
  that reads back exact, as ``repr`` is, with the same exponent form (``1e-05``, ``5e-324``) and
  the same switch to it below 1e-4. They differ in three places, each handled: a whole number
  (``40`` where ``repr`` says ``40.0``, ``-0`` for ``-0.0``); 1e15 <= |x| < 1e16, which ``repr``
  still writes without an exponent (``1000000000000000.0``); and the non-finite values (``NaN``,
  ``Infinity``: ``repr`` says ``nan``, ``inf``; ``json.dumps`` says what PostgreSQL says); and
  from 1e16 on, where PostgreSQL writes some whole numbers with more digits than ``repr``: those
  are marked by the server and written by Python. A reading holds -40..80 °C and 0..100 %RH
  (service/payload.py), where only the first applies; the others are there for journals filled by
  other means.
- **names**: as stored, unquoted (CSV, as the generic path writes them) or in plain quotes
  (NDJSON): the node-name rule (service/names.py) leaves nothing for ``json.dumps`` to escape. A
  journal holding a name outside the rule (only manual SQL makes one) is exported by the generic
  path instead (NDJSON would need it escaped, and it could hold the mark): :func:`odd_names` is
  asked first, in the same snapshot.
- **telemetry** (``with_extra``): after humidity, ``vbat`` as the floats above and the integers
  (``rssi``, ``awake_ms``, ``lost``) as ``int::text``, which is ``str`` of a Python int; a value not
  sent is an empty CSV cell (``COALESCE``) and no NDJSON key (``', "vbat": ' || NULL`` is NULL).
- **line ends**: ``\\r\\n`` in CSV (RFC 4180, as ``csv.writer``), ``\\n`` in NDJSON, added as the
  lines are joined.
"""
from __future__ import annotations

import itertools
import re
from typing import Iterator, Optional

import psycopg

from ...names import NODE_NAME
from ..interface import EXTRA_FIELDS

# The node-name rule as a PostgreSQL regular expression (names.py's, anchored).
_NAME_RULE = "^" + NODE_NAME.pattern + "$"

_cursor_names = itertools.count(1)
FLOAT_EXTRAS = ("vbat",)  # the telemetry stored as float8, written as the readings are; the others are integers
CHUNK_ROWS = 5000  # lines per chunk, as many as the generic path's batches

# floor(ts / 1e9) and its remainder, without overflow (PostgreSQL's / and mod() truncate towards zero)
_SECONDS = "(readings.ts / 1000000000 - (mod(readings.ts, 1000000000) < 0)::int)"
_NANOS = "substr((mod(readings.ts, 1000000000) + CASE WHEN mod(readings.ts, 1000000000) < 0 THEN 2000000000 ELSE 1000000000 END)::text, 2)"
TIME = (f"replace((to_timestamp({_SECONDS}) AT TIME ZONE 'UTC')::text, ' ', 'T') || '.' || {_NANOS} || 'Z'")
NAME = "COALESCE(nodes.name, '#' || readings.node_id)"


def number(column: str, fmt: str) -> str:
    """SQL for the text ``repr`` (csv) or ``json.dumps`` (ndjson) gives the float ``column``."""
    v = column
    nan, inf = ("nan", "inf") if fmt == "csv" else ("NaN", "Infinity")
    # NaN and the infinities are not < 1e15 in PostgreSQL (NaN sorts above every number). From 1e16 on
    # PostgreSQL writes some whole numbers with more digits than ``repr`` (``5.5455982195228864e+16``
    # for ``5.545598219522886e+16``): those come marked (:data:`MARK`) and Python writes them.
    return (
        f"CASE WHEN abs({v}) < 1e15 THEN CASE WHEN {v} = trunc({v}) THEN {v}::text || '.0' ELSE {v}::text END"
        f" WHEN abs({v}) < 1e16 THEN ({v}::text)::numeric::text"
        f" || CASE WHEN ({v}::text)::numeric = trunc(({v}::text)::numeric) THEN '.0' ELSE '' END"
        f" WHEN {v} = 'NaN' THEN '{nan}' WHEN {v} = 'Infinity' THEN '{inf}' WHEN {v} = '-Infinity' THEN '-{inf}'"
        f" ELSE chr({ord(MARK)}) || {v}::text END"
    )


MARK = "\x01"  # before a number Python must write; no line holds it otherwise (names follow service/names.py)
_MARKED = re.compile("\x01([-+0-9.eE]+)")


def _unmark(text: str) -> str:
    """``text`` with each marked number as ``repr`` (= ``json.dumps``) writes it."""
    return _MARKED.sub(lambda m: repr(float(m[1])), text) if MARK in text else text


def _extra_csv() -> str:
    """SQL for the CSV cells of the telemetry, after humidity: each empty when not sent."""
    cells = []
    for column in EXTRA_FIELDS:
        value = number(f"readings.{column}", "csv") if column in FLOAT_EXTRAS else f"readings.{column}::text"
        cells.append(f"',' || COALESCE({value}, '')")
    return " || ".join(cells)


def _extra_json() -> str:
    """SQL for the NDJSON keys of the telemetry, each only when sent (``||`` with NULL is NULL)."""
    keys = []
    for column in EXTRA_FIELDS:
        value = number(f"readings.{column}", "ndjson") if column in FLOAT_EXTRAS else f"readings.{column}::text"
        keys.append(f"""COALESCE(', "{column}": ' || {value}, '')""")
    return " || ".join(keys)


def line(fmt: str, with_extra: bool = False) -> str:
    """SQL for one row's line, without its end (``with_extra``: with the telemetry columns or keys)."""
    if fmt == "csv":
        return (
            f"{TIME} || ',' || {NAME} || ',' || {number('readings.temperature', fmt)} || ',' || {number('readings.humidity', fmt)}"
            + (f" || {_extra_csv()}" if with_extra else "")
        )
    return (
        f"""'{{"time": "' || {TIME} || '", "node": "' || {NAME} || '", "temperature": '"""
        f""" || {number('readings.temperature', fmt)} || ', "humidity": ' || {number('readings.humidity', fmt)}"""
        + (f" || {_extra_json()}" if with_extra else "")
        + " || '}'"
    )


def select_sql(fmt: str, clause: str, limit: Optional[int], with_extra: bool = False) -> str:
    """The lines of the rows ``clause`` selects (of ``readings`` joined with ``nodes``), in the export's order."""
    sql = (
        f"SELECT {line(fmt, with_extra)} FROM readings LEFT JOIN nodes ON nodes.id = readings.node_id"
        f" WHERE {clause} ORDER BY readings.ts, readings.id"
    )
    return sql if limit is None else f"{sql} LIMIT {int(limit)}"


def odd_names(conn: psycopg.Connection) -> bool:
    """Whether any node's name breaks the node-name rule (an NDJSON line would need it escaped)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM nodes WHERE name !~ %s)", (_NAME_RULE,)).fetchone()[0]


def line_chunks(
    conn: psycopg.Connection, fmt: str, clause: str, params: list, limit: Optional[int],
    rows_per_chunk: int = CHUNK_ROWS, *, with_extra: bool = False,
) -> Iterator[tuple[str, int]]:
    """``(text, rows)`` chunks of the export, ``rows_per_chunk`` lines each (the last fewer), on
    ``conn`` inside a transaction (its settings are set for that transaction only).

    With libpq 17 or later the rows stream in chunks of ``rows_per_chunk`` (``cursor.stream``): the
    server keeps writing while the chunk before is handed on. An older libpq reads them through a
    named cursor, a round trip per chunk. ``with_extra``: the lines with the telemetry (service/export.py's)."""
    conn.execute("SET LOCAL extra_float_digits = 1")
    conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    sql = select_sql(fmt, clause, limit, with_extra)
    end = "\r\n" if fmt == "csv" else "\n"
    if psycopg.pq.version() >= 170000:
        with conn.cursor() as cur:
            lines: list[str] = []
            for (text,) in cur.stream(sql, params, size=rows_per_chunk):
                lines.append(text)
                if len(lines) == rows_per_chunk:
                    yield _unmark(end.join(lines) + end), len(lines)
                    lines = []
            if lines:
                yield _unmark(end.join(lines) + end), len(lines)
        return
    with conn.cursor(name=f"tswarm_export_{next(_cursor_names)}") as cur:
        cur.itersize = rows_per_chunk
        cur.execute(sql, params)
        while rows := cur.fetchmany(rows_per_chunk):
            yield _unmark(end.join([text for text, in rows]) + end), len(rows)
