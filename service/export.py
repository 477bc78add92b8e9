"""Readings as CSV or NDJSON, oldest first, streamed in chunks with constant memory.

One code path for ``tswarm export`` and ``GET /api/readings``. No aiohttp here.

Resuming: rows are ordered by ``(time, id)``, where ``id`` is the journal's row id. A *cursor*
names one row of that order; an export given a cursor starts strictly after that row. On the
wire a cursor is an opaque token (:func:`encode_cursor`); readers get it from the API and hand
it back, they never build one. With ``store=influxdb``, rows older than the journal's horizon
come from InfluxDB (:mod:`tswarm.history`), ordered by ``(time, node)``; their cursor is
``(time, node)``.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from typing import Callable, Iterator, Optional

from . import history
from .journal import Journal
from .timefmt import rfc3339

FORMATS = ("csv", "ndjson")
CSV_HEADER = ("time", "node", "temperature", "humidity")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

Cursor = history.Cursor  # (ts_ns, row id) of the last row delivered; (ts_ns, node) for a row from InfluxDB
_CURSOR_TEXT = re.compile(r"r1\.(-?\d{1,20})\.(\d{1,20})", re.ASCII)
_HISTORY_CURSOR_TEXT = re.compile(r"h1\.(-?\d{1,20})\.([A-Za-z0-9][A-Za-z0-9_.-]{0,63})", re.ASCII)


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe token for the row ``(ts, id)``, or ``(ts, node)`` below the horizon."""
    ts, row = cursor
    text = f"h1.{ts}.{row}" if isinstance(row, str) else f"r1.{ts}.{row}"
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The row a token from :func:`encode_cursor` names; ValueError when it is not such a token."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = _CURSOR_TEXT.fullmatch(text)
    if match:
        return int(match[1]), int(match[2])
    match = _HISTORY_CURSOR_TEXT.fullmatch(text)
    if match:
        return int(match[1]), match[2]
    raise ValueError("cursor is not one this service handed out; pass it back exactly as received")


class FloatText(dict):
    """``repr`` of floats, remembered: a sensor reports a few thousand distinct values, and a dict
    lookup costs a fraction of formatting one. Zeros are not remembered (0.0 == -0.0)."""

    MAX_ENTRIES = 100_000

    def __missing__(self, value: float) -> str:
        text = repr(value)
        if value and len(self) < self.MAX_ENTRIES:
            self[value] = text
        return text


def export_chunks(
    journal: Journal,
    *,
    fmt: str = "csv",
    node: Optional[str] = None,
    start_ns: Optional[int] = None,
    stop_ns: Optional[int] = None,
    header: bool = True,
    after: Optional[Cursor] = None,
    limit: Optional[int] = None,
    on_rows: Optional[Callable[[int], None]] = None,
    influx: Optional[history.InfluxHistory] = None,
) -> Iterator[str]:
    """Yield text chunks of the export; each chunk holds up to a few thousand rows.

    ``after`` resumes after a cursor, ``limit`` caps the number of rows, ``on_rows(n)`` is called
    after each chunk with its number of rows (progress bars). ``influx`` (``store=influxdb``) gives
    back what the journal pruned; it raises :class:`history.HistoryUnavailable` when it cannot.
    The first rows are read before the first chunk (the CSV header) is yielded, so an unreachable
    InfluxDB fails the export before anything is written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if influx is not None:
        batches = history.readings(journal, influx, node=node, start_ns=start_ns, stop_ns=stop_ns, after=after, limit=limit)
        batches = _started(batches)
    else:
        batches = journal.iter_readings(
            node=node, start_ns=start_ns, stop_ns=stop_ns, after=history.journal_cursor(after), limit=limit
        )
    if fmt == "csv":
        text = FloatText()
        if header:
            yield ",".join(CSV_HEADER) + "\r\n"
        for rows in batches:
            # Node names come from a safe alphabet (no comma, quote or line break) and the rest are
            # numbers and RFC 3339 times, so no field ever needs quoting: these lines are what
            # csv.writer would write, byte for byte (a test checks), at more than twice its speed.
            yield "".join([f"{rfc3339(ts)},{name},{text[t]},{text[h]}\r\n" for ts, name, t, h in rows])
            if on_rows is not None:
                on_rows(len(rows))
    else:
        dumps = json.dumps
        for rows in batches:
            yield "".join(
                dumps({"time": rfc3339(ts), "node": name, "temperature": t, "humidity": h}) + "\n"
                for ts, name, t, h in rows
            )
            if on_rows is not None:
                on_rows(len(rows))


def _started(batches: Iterator[list]) -> Iterator[list]:
    """``batches`` with its first item already fetched: the queries it needs have run."""
    first = next(batches, None)
    return iter(()) if first is None else itertools.chain([first], batches)
