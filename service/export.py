"""Readings as CSV or NDJSON, oldest first, streamed in chunks with constant memory.

One code path for ``tswarm export`` and ``GET /api/readings``. No aiohttp here.

Columns: ``time,node,temperature,humidity`` as ever, then the telemetry a node may send with a
reading, ``vbat,rssi,awake_ms,lost`` (:data:`~tswarm.storage.interface.EXTRA_FIELDS`), each an empty
cell when the reading came without it; NDJSON has those keys only when present.

Resuming: an export reads the journal in *passes* (:mod:`tswarm.history`): the first over every
reading, each later one over the readings that arrived since (a reading kept on a node through an
outage arrives with an older time than readings stored before it); within a pass rows are ordered by
``(time, id)``. A *cursor* names a pass and a row in it; an export given a cursor starts strictly
after that row, and every export ends with the cursor to resume after it. On the wire a cursor is
an opaque token (:func:`encode_cursor`); readers get it from the API and hand it back, they never
build one. With ``store=influxdb``, rows older than the journal's horizon come from InfluxDB
(:mod:`tswarm.history`), ordered by ``(time, node)``; their cursor names ``(time, node)``.

Parameters: :func:`export_args` checks what a reader asks for (node, times, format, limit,
cursor) before anything runs, the same way for ``GET /api/readings`` and ``tswarm export``; an
export that passes it can only fail on the store itself, and :func:`export_chunks` makes its first
chunk only after the store has started answering.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Union

from . import history
from .names import NODE_NAME_HELP, valid_node_name
from .storage import Storage
from .storage.interface import EXTRA_FIELDS
from .timefmt import MAX_NS, MIN_NS, MINUTES, SECOND_TEXT, parse_time

if TYPE_CHECKING:
    from .influx.query import InfluxHistory

FORMATS = ("csv", "ndjson")
CSV_HEADER = ("time", "node", "temperature", "humidity", *EXTRA_FIELDS)
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

Cursor = history.Cursor
Position = history.Position
# The token texts. r1/h1 with two fields are what tswarm handed out before kept readings (a row only);
# now r1 and h1 carry the pass too, and n1 is the start of the pass over the ids after ``lo``.
_ROW_TEXT = re.compile(r"r1\.(-?\d{1,20})\.(\d{1,20})(?:\.(\d{1,20})\.(\d{1,20}))?", re.ASCII)
_HISTORY_TEXT = re.compile(r"h1\.(-?\d{1,20})\.([A-Za-z0-9][A-Za-z0-9_.-]{0,63})(?::(\d{1,20}))?", re.ASCII)
_NEXT_PASS_TEXT = re.compile(r"n1\.(\d{1,20})", re.ASCII)
# A token as encode_cursor writes it: URL-safe base64 without padding. b64decode alone would take
# padding, white space (a '+' of the query) and other characters it skips as the same token.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,200}", re.ASCII)
_MAX_ROW_ID = 2**63 - 1  # SQLite's largest rowid
MAX_LIMIT = 1_000_000_000  # rows per page: more than any swarm stores in years, far from 64-bit limits
_LIMIT_TEXT = re.compile(r"[0-9]{1,10}")  # ASCII digits only: int() would read "١٢" and "１２" too
LIMIT_HELP = f"limit must be a whole number of rows from 1 to {MAX_LIMIT} (ASCII digits)"
CURSOR_HELP = "cursor is not one this service handed out; pass it back exactly as received"


class BadParameter(ValueError):
    """A parameter an export cannot run with; ``param`` names it, the message says what to fix."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class UnknownNode(LookupError):
    """``node`` names no node that was ever registered (a removed node keeps its history)."""

    def __init__(self, node: str):
        super().__init__(f"no node named {node!r} was ever registered")
        self.node = node


def encode_cursor(cursor: Union[Cursor, Position]) -> str:
    """An opaque, URL-safe token for a :class:`~tswarm.history.Cursor` (or a bare row ``(ts, id)``,
    ``(ts, node)`` below the horizon, as tswarm wrote them before kept readings)."""
    if not isinstance(cursor, Cursor):
        ts, row = cursor
        text = f"h1.{ts}.{row}" if isinstance(row, str) else f"r1.{ts}.{row}"
    elif cursor.ts is None and cursor.hi is None:
        text = f"n1.{cursor.lo}"
    elif isinstance(cursor.row, str) and cursor.lo == 0:
        text = f"h1.{cursor.ts}.{cursor.row}" + ("" if cursor.hi is None else f":{cursor.hi}")
    elif isinstance(cursor.row, int) and cursor.hi is not None:
        text = f"r1.{cursor.ts}.{cursor.row}.{cursor.lo}.{cursor.hi}"
    else:
        raise ValueError(f"no token names {cursor!r}")
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> Union[Cursor, Position]:
    """What a token from :func:`encode_cursor` names (a bare row for the tokens of earlier tswarm);
    ValueError when it is not such a token (or names a time, row id or pass that no row can have)."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii") if _TOKEN.fullmatch(token) else ""
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if match := _NEXT_PASS_TEXT.fullmatch(text):
        if int(match[1]) > _MAX_ROW_ID:
            raise ValueError(CURSOR_HELP)
        return Cursor(lo=int(match[1]))
    match = _ROW_TEXT.fullmatch(text) or _HISTORY_TEXT.fullmatch(text)
    if match is None or not MIN_NS <= int(match[1]) <= MAX_NS:
        raise ValueError(CURSOR_HELP)
    ts = int(match[1])
    if match.re is _HISTORY_TEXT:
        if match[3] is None:
            return ts, match[2]
        if int(match[3]) > _MAX_ROW_ID:
            raise ValueError(CURSOR_HELP)
        return Cursor(ts, match[2], 0, int(match[3]))
    row = int(match[2])
    if match[3] is None:
        if row > _MAX_ROW_ID:
            raise ValueError(CURSOR_HELP)
        return ts, row
    lo, hi = int(match[3]), int(match[4])
    if not lo < row <= hi <= _MAX_ROW_ID:  # the row is one of its pass
        raise ValueError(CURSOR_HELP)
    return Cursor(ts, row, lo, hi)


def parse_limit(text: str) -> int:
    """Rows per page, from its text: 1 to :data:`MAX_LIMIT`, ASCII digits; ValueError otherwise."""
    if not _LIMIT_TEXT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(LIMIT_HELP)
    return int(text)


def export_args(
    *,
    fmt: str = "csv",
    node: Optional[str] = None,
    start: Union[str, int, None] = None,
    stop: Union[str, int, None] = None,
    limit: Union[str, int, None] = None,
    cursor: Optional[str] = None,
) -> dict:
    """The keyword arguments of :func:`export_chunks` for what a reader asks for, every one checked.

    Times are text (:func:`~tswarm.timefmt.parse_time`) or nanoseconds, ``limit`` text or a
    number, ``cursor`` a token from :func:`encode_cursor`. Raises :class:`BadParameter` (which
    parameter, what to fix). ``GET /api/readings`` and ``tswarm export`` both call this, and then
    :func:`check_node` with their journal, so they refuse the same inputs with the same words.
    """
    if fmt not in FORMATS:
        raise BadParameter("format", f"format must be one of {', '.join(FORMATS)}")
    args: dict = {"fmt": fmt, "node": node}
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, str):
            try:
                value = parse_time(value)
            except ValueError as exc:
                raise BadParameter(name, f"{name}: {exc}") from None
        elif value is not None and not MIN_NS <= value <= MAX_NS:
            raise BadParameter(name, f"{name}: {value} ns is outside the times tswarm can hold")
        args[f"{name}_ns"] = value
    if args["start_ns"] is not None and args["stop_ns"] is not None and args["stop_ns"] <= args["start_ns"]:
        raise BadParameter("stop", "stop must be after start")
    if limit is not None:
        try:
            args["limit"] = parse_limit(limit if isinstance(limit, str) else str(limit))
        except ValueError as exc:
            raise BadParameter("limit", str(exc)) from None
    if cursor is not None:
        try:
            args["after"] = decode_cursor(cursor)
        except ValueError as exc:
            raise BadParameter("cursor", str(exc)) from None
    if node is not None and not valid_node_name(node):
        raise BadParameter("node", f"node names are {NODE_NAME_HELP}")
    return args


def check_node(journal: Storage, node: Optional[str]) -> None:
    """UnknownNode unless ``node`` (when given) was ever registered: an export of a name that never
    existed is an error, not an empty file."""
    if node is not None and not journal.ever_registered(node):
        raise UnknownNode(node)


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
    journal: Storage,
    *,
    fmt: str = "csv",
    node: Optional[str] = None,
    start_ns: Optional[int] = None,
    stop_ns: Optional[int] = None,
    header: bool = True,
    after: Union[Cursor, Position, None] = None,
    limit: Optional[int] = None,
    on_rows: Optional[Callable[[int], None]] = None,
    influx: Optional[InfluxHistory] = None,
    page: Optional[history.Page] = None,
) -> Iterator[str]:
    """Yield text chunks of the export; each chunk holds up to a few thousand rows.

    ``after`` resumes after a cursor, ``limit`` caps the number of rows, ``on_rows(n)`` is called
    after each chunk with its number of rows (progress bars). ``influx`` (``store=influxdb``) gives
    back what the journal pruned; it raises :class:`history.HistoryUnavailable` when it cannot.
    ``page``: the page :func:`tswarm.history.plan` made for these arguments (in the same snapshot),
    whose ``resume`` is the cursor after this export; None plans it here.
    The first rows are read before the first chunk (the CSV header) is yielded, so a query that
    cannot run (an unreachable InfluxDB, a journal that fails) fails the export before anything is
    written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if page is None:
        page = history.plan(journal, influx, node=node, start_ns=start_ns, stop_ns=stop_ns, after=after, limit=limit)
    bounds = {"node": node, "start_ns": start_ns, "stop_ns": stop_ns}
    pieces = itertools.chain.from_iterable(_pass_pieces(journal, influx, page, p, fmt, bounds) for p in page.passes)
    first = next(pieces, None)  # the store has answered (or failed) before the header goes
    if fmt == "csv" and header:
        yield ",".join(CSV_HEADER) + "\r\n"
    if first is None:
        return
    for text, rows in itertools.chain([first], pieces):
        yield text
        if on_rows is not None:
            on_rows(rows)


def _pass_pieces(journal: Storage, influx, page: history.Page, p: history.Pass, fmt: str, bounds: dict):
    """``(text, rows)`` chunks of one pass: written by the store when it can, else formatted here."""
    if history.journal_alone(page, p):
        lines = journal.export_lines(
            fmt, **bounds, after=history.journal_cursor(p.after), limit=p.limit, with_extra=True, ids=p.ids
        )
        if lines is not None:
            yield from lines
            return
    batches = history.pass_rows(journal, influx, page, p, **bounds)
    lines = csv_lines if fmt == "csv" else ndjson_lines
    text = FloatText()
    for rows in batches:
        yield lines(rows, text), len(rows)


def csv_lines(rows: list, text: Optional[FloatText] = None) -> str:
    """The CSV lines of rows ``(ts, node, temperature, humidity, vbat, rssi, awake_ms, lost)``.

    Node names come from a safe alphabet (no comma, quote or line break) and the rest are numbers
    and RFC 3339 times, so no field ever needs quoting: these lines are what csv.writer would write,
    byte for byte (a test checks), at more than twice its speed. A cell not sent is empty.

    The time is :func:`~tswarm.timefmt.rfc3339`, inline: a call per row costs more than the rest of
    the line (tests/test_export_lines.py checks these lines against the formatting of before)."""
    text = FloatText() if text is None else text
    minutes, seconds = MINUTES, SECOND_TEXT
    return "".join([
        f"{minutes[ts // 60_000_000_000]}{seconds[ts % 60_000_000_000 // 1_000_000_000]}"
        f"{'%09d' % (ts % 1_000_000_000)}Z,{name},{text[t]},{text[h]},,,,\r\n"
        if v is None and r is None and a is None and n is None else
        f"{minutes[ts // 60_000_000_000]}{seconds[ts % 60_000_000_000 // 1_000_000_000]}"
        f"{'%09d' % (ts % 1_000_000_000)}Z,{name},{text[t]},{text[h]},{'' if v is None else text[v]},"
        f"{'' if r is None else r},{'' if a is None else a},{'' if n is None else n}\r\n"
        for ts, name, t, h, v, r, a, n in rows
    ])


class JsonText(dict):
    """``json.dumps`` of the values of one kind of cell, remembered as :class:`FloatText` does
    (floats and node names: a few thousand distinct ones). Zeros are not remembered (0.0 == -0.0)."""

    MAX_ENTRIES = FloatText.MAX_ENTRIES

    def __missing__(self, value) -> str:
        text = json.dumps(value)
        if value and len(self) < self.MAX_ENTRIES:
            self[value] = text
        return text


def _json_int(value) -> str:
    """``json.dumps`` of an integer cell (``str``), or of whatever else a hand-written row holds there."""
    return str(value) if type(value) is int else json.dumps(value)


def ndjson_lines(rows: list, text: object = None) -> str:
    """The NDJSON lines of the same rows: the telemetry keys only when sent. Each line is what
    ``json.dumps`` writes for ``{"time", "node", "temperature", "humidity", <telemetry sent>}``
    (a test checks), written as text: ``json.dumps`` of a dict per row costs three times as much."""
    floats, names = JsonText(), JsonText()
    minutes, seconds = MINUTES, SECOND_TEXT
    out = []
    append = out.append
    for ts, name, t, h, v, r, a, n in rows:
        head = (
            f'{{"time": "{minutes[ts // 60_000_000_000]}{seconds[ts % 60_000_000_000 // 1_000_000_000]}'
            f'{"%09d" % (ts % 1_000_000_000)}Z", "node": {names[name]}, '
            f'"temperature": {floats[t]}, "humidity": {floats[h]}'
        )
        if v is None and r is None and a is None and n is None:
            append(head + "}\n")
            continue
        append(
            head
            + ("" if v is None else f', "vbat": {floats[v]}')
            + ("" if r is None else f', "rssi": {_json_int(r)}')
            + ("" if a is None else f', "awake_ms": {_json_int(a)}')
            + ("" if n is None else f', "lost": {_json_int(n)}')
            + "}\n"
        )
    return "".join(out)
