"""The whole history for bulk reads: readings the journal pruned come back from InfluxDB.

With ``TSWARM_STORE=influxdb``, retention (:mod:`tswarm.retention`) deletes forwarded readings
from the journal, and the journal records its *horizon* (:meth:`Storage.pruned_before`): below
it, the journal is no longer complete. An export (``tswarm export``, ``GET /api/readings``) then
reads two parts, one after the other, with no gap and no overlap:

- ``time < horizon``: InfluxDB, merged with what the journal still holds below the horizon
  (readings not yet forwarded when it pruned, readings InfluxDB refused for good), each reading
  once, ordered by ``(time, node)``;
- ``time >= horizon``: the journal, ordered by ``(time, id)``, exactly as with ``store=sqlite``.

A journal that never pruned has no horizon, and InfluxDB is not asked at all; with
``store=sqlite`` none of this runs.

InfluxDB is read as a stream, with constant memory whatever the range:

- v1 API (InfluxDB 1.x): InfluxQL ``GET /query?chunked=true&chunk_size=N&epoch=ns``; InfluxDB
  answers one JSON document per chunk, one per line, read as they arrive. The same URL,
  database, user and password as the forwarder's writes.
- v2 API: Flux through influxdb-client's ``query_api().query_stream``, pivoted so that each
  record is one reading, with its time as an integer of nanoseconds (Python's ``datetime``
  would drop the last three digits).

When InfluxDB cannot answer for a range the journal no longer holds, reading fails with
:class:`HistoryUnavailable`: an export is never silently shorter than what was stored.

Cursors (see :mod:`tswarm.export`): a row of the journal part is named by ``(time, id)``; a row
of the InfluxDB part has no id and is named by ``(time, node)``, which is unique because no two
readings of a node share a timestamp. Blocking code, meant for a thread (the CLI, or the
readers' export thread); no aiohttp here.
"""
from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from itertools import groupby
from typing import Iterable, Iterator, Optional, Union

from .influx import MEASUREMENT, TAG_NODE
from .storage import Storage
from .settings import Config
from .timefmt import rfc3339

QUERY_TIMEOUT_S = 30  # per connect and per read: a chunk of InfluxDB's answer may take that long
CHUNK_SIZE = 10_000  # InfluxDB 1.x: points per JSON chunk
BATCH = 5000  # rows per batch handed to the export

Row = tuple[int, str, float, float]  # (ts_ns, node, temperature, humidity)
Cursor = Union[tuple[int, int], tuple[int, str]]  # (ts, journal id) or (ts, node)


class HistoryUnavailable(Exception):
    """InfluxDB could not give the readings of a range the journal no longer holds."""


# -- reading InfluxDB -----------------------------------------------------------------------------


class InfluxHistory:
    """Readings from one InfluxDB, ``(ts, node, temperature, humidity)`` in ``(ts, node)`` order."""

    description = "InfluxDB"

    def readings(
        self, start_ns: Optional[int], stop_ns: int, node: Optional[str] = None,
        after: Optional[tuple[int, str]] = None, limit: Optional[int] = None,
    ) -> Iterator[Row]:
        """Readings with ``start_ns <= ts < stop_ns`` (of ``node`` only, when given), strictly after
        ``after=(ts, node)``, at most ``limit``. Raises :class:`HistoryUnavailable`."""
        if after is not None and (start_ns is None or after[0] > start_ns):
            start_ns = after[0]  # rows of that instant up to `after` are dropped below
        rows = _in_node_order(self._query(start_ns, stop_ns, node))
        if after is not None:
            rows = (row for row in rows if (row[0], row[1]) > after)
        for count, row in enumerate(rows, 1):
            yield row
            if limit is not None and count >= limit:
                return

    def _query(self, start_ns: Optional[int], stop_ns: int, node: Optional[str]) -> Iterator[Row]:
        """The range's rows in time order (ties in any order)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "InfluxHistory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unavailable(self, what: object) -> HistoryUnavailable:
        return HistoryUnavailable(
            f"readings the journal has pruned are only in {self.description}, which could not give them: {what}"
        )


def _in_node_order(rows: Iterable[Row]) -> Iterator[Row]:
    """Rows in time order, re-sorted by node within each instant (InfluxDB promises only time order)."""
    for _, same_instant in groupby(rows, key=lambda row: row[0]):
        yield from sorted(same_instant, key=lambda row: row[1])


def influxql(start_ns: Optional[int], stop_ns: int, node: Optional[str]) -> str:
    """The InfluxQL of a range (InfluxDB 1.x): integer times are nanoseconds."""
    where = [f"time < {int(stop_ns)}"]
    if start_ns is not None:
        where.insert(0, f"time >= {int(start_ns)}")
    if node is not None:
        where.append(f"\"{TAG_NODE}\" = '{_escape(node, quote=chr(39))}'")
    return f'SELECT "temperature", "humidity", "{TAG_NODE}" FROM "{MEASUREMENT}" WHERE {" AND ".join(where)}'


class V1History(InfluxHistory):
    """InfluxDB 1.x: InfluxQL ``/query`` with ``chunked=true``, read line by line as it streams."""

    def __init__(self, url: str, db: str, user: str = "", password: str = "",
                 chunk_size: int = CHUNK_SIZE, timeout_s: float = QUERY_TIMEOUT_S):
        self.url, self.db = url.rstrip("/"), db
        self.description = f"InfluxDB v1 API at {self.url}, database {db!r}"
        self.chunk_size, self.timeout_s = chunk_size, timeout_s
        self.headers = {"Accept": "application/json"}
        if user:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"

    def _query(self, start_ns, stop_ns, node) -> Iterator[Row]:
        params = {"db": self.db, "q": influxql(start_ns, stop_ns, node), "epoch": "ns",
                  "chunked": "true", "chunk_size": str(self.chunk_size)}
        request = urllib.request.Request(f"{self.url}/query?{urllib.parse.urlencode(params)}", headers=self.headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._unavailable(f"HTTP {exc.code}: {_error_of(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unavailable(getattr(exc, "reason", None) or exc) from None
        partial = None  # InfluxDB marks every chunk but the last "partial": true
        with response:
            for line in self._lines(response):
                if line.strip():
                    rows, partial = self._parse_chunk(line)
                    yield from rows
        if partial is not False:
            raise self._unavailable("the answer broke off before its last chunk")

    def _lines(self, response) -> Iterator[bytes]:
        """The answer's lines as they arrive. ``read1`` raises on a chunked body cut short, where
        ``readline`` would just end."""
        pending = bytearray()
        while True:
            try:
                data = response.read1(65536)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unavailable(f"the answer broke off ({type(exc).__name__}: {exc})") from None
            if not data:
                yield bytes(pending)
                return
            pending += data
            while (end := pending.find(b"\n")) >= 0:
                yield bytes(pending[:end])
                del pending[: end + 1]

    def _parse_chunk(self, line: bytes) -> tuple[list[Row], bool]:
        """The rows of one JSON chunk (at most ``chunk_size``), and whether more chunks follow."""
        try:
            chunk = json.loads(line)
        except ValueError:
            raise self._unavailable(f"an answer that is not JSON: {line[:200]!r}") from None
        if "error" in chunk:
            raise self._unavailable(chunk["error"])
        rows, partial = [], False
        for result in chunk.get("results", ()):
            if "error" in result:
                raise self._unavailable(result["error"])
            partial = partial or bool(result.get("partial"))
            for series in result.get("series", ()):
                columns = series["columns"]
                t, temperature, humidity, name = (columns.index(c) for c in ("time", "temperature", "humidity", TAG_NODE))
                for values in series.get("values", ()):
                    if values[temperature] is None or values[humidity] is None:
                        continue  # not a point tswarm wrote (those always have both fields)
                    # JSON has no float type: 23.0 arrives as 23; the journal's REAL reads back as 23.0.
                    rows.append((values[t], values[name], float(values[temperature]), float(values[humidity])))
        return rows, partial


def flux(bucket: str, start_ns: Optional[int], stop_ns: int, node: Optional[str],
         after: Optional[tuple[int, str]] = None, limit: Optional[int] = None) -> str:
    """The Flux of a range (InfluxDB 2.x): one record per reading, in ``(time, node)`` order.

    ``ts`` is ``int(v: r._time)``, the time in nanoseconds. ``after`` and ``limit`` are applied by
    InfluxDB, so a page does not fetch more than it needs.
    """
    lines = [
        f'from(bucket: "{_escape(bucket)}")',
        f"  |> range(start: {rfc3339(start_ns or 0)}, stop: {rfc3339(stop_ns)})",
        f'  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}" and (r._field == "temperature" or r._field == "humidity"))',
    ]
    if node is not None:
        lines.append(f'  |> filter(fn: (r) => r.{TAG_NODE} == "{_escape(node)}")')
    lines.append('  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')
    if after is not None:
        at = rfc3339(after[0])
        lines.append(f'  |> filter(fn: (r) => r._time > {at} or (r._time == {at} and r.{TAG_NODE} > "{_escape(after[1])}"))')
    lines += ["  |> group()", f'  |> sort(columns: ["_time", "{TAG_NODE}"])']
    if limit is not None:
        lines.append(f"  |> limit(n: {int(limit)})")
    lines.append(
        f"  |> map(fn: (r) => ({{ts: int(v: r._time), node: r.{TAG_NODE}, temperature: r.temperature, humidity: r.humidity}}))"
    )
    return "\n".join(lines)


class V2History(InfluxHistory):
    """InfluxDB 2.x/3.x: Flux through influxdb-client's ``query_stream`` (records as they are parsed)."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = QUERY_TIMEOUT_S):
        from influxdb_client import InfluxDBClient

        self.org, self.bucket = org, bucket
        self.description = f"InfluxDB v2 API at {url}, bucket {bucket!r}"
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False)

    def readings(self, start_ns, stop_ns, node=None, after=None, limit=None) -> Iterator[Row]:
        query = flux(self.bucket, start_ns, stop_ns, node, after, limit)
        try:
            records = self._client.query_api().query_stream(query, org=self.org)
        except Exception as exc:  # ApiException (an HTTP error), urllib3's connection errors...
            raise self._unavailable(_describe(exc)) from None
        with contextlib.closing(records):
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    return
                except Exception as exc:
                    raise self._unavailable(f"the answer broke off ({_describe(exc)})") from None
                values = record.values
                yield values["ts"], values[TAG_NODE], float(values["temperature"]), float(values["humidity"])

    def close(self) -> None:
        self._client.close()


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status}: {_error_of(getattr(exc, 'body', None) or getattr(exc, 'reason', ''))}"
    return f"{type(exc).__name__}: {exc}"


def _escape(text: str, quote: str = '"') -> str:
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote)


def _error_of(body) -> str:
    """InfluxDB's ``{"error": "..."}`` / ``{"message": "..."}``, or the body as it is."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
        return str(data.get("error") or data.get("message") or text).strip()
    except (ValueError, AttributeError):
        return text.strip()[:300]


def open_history(config: Config) -> Optional[InfluxHistory]:
    """The InfluxDB that holds what the journal pruned (``TSWARM_INFLUX_*``); None with ``store=sqlite``.

    Use it as a context manager: ``with open_history(config) or contextlib.nullcontext() as influx``.
    """
    if config.store != "influxdb":
        return None
    if config.influx_api == "1":
        return V1History(config.influx_url, config.influx_db, config.influx_user, config.influx_password)
    return V2History(config.influx_url, config.influx_token, config.influx_org, config.influx_bucket)


# -- the two parts of an export -------------------------------------------------------------------


def journal_cursor(after: Optional[Cursor]) -> Optional[tuple[int, int]]:
    """A cursor for the journal's ``(time, id)`` order. A ``(time, node)`` cursor resumes at its
    instant (rows of that one instant may come again; never one is skipped)."""
    if after is None or isinstance(after[1], int):
        return after
    return after[0], 0


def _plan(journal: Storage, influx: Optional[InfluxHistory], start_ns, stop_ns, after):
    """``(old, journal_start, journal_after)``: ``old`` is ``(start, stop, after)`` of the part below
    the horizon, or None when the export does not reach below it."""
    horizon = journal.pruned_before() if influx is not None else None
    if horizon is None:
        return None, start_ns, journal_cursor(after)
    old_start = start_ns
    old_stop = horizon if stop_ns is None else min(stop_ns, horizon)
    old_after = None
    if after is not None:
        # A (time, id) cursor below the horizon was handed out before the journal pruned past it:
        # resume at its instant.
        old_after = after if isinstance(after[1], str) else (after[0], "")
    lowest = old_after[0] if old_after is not None else old_start
    old = (old_start, old_stop, old_after) if lowest is None or lowest < old_stop else None
    journal_start = horizon if start_ns is None else max(start_ns, horizon)
    return old, journal_start, journal_cursor(after)


def _old_rows(journal: Storage, influx: InfluxHistory, node, old, limit) -> Iterator[Row]:
    """Below the horizon: InfluxDB and what the journal still holds there, each reading once."""
    start_ns, stop_ns, after = old
    from_influx = influx.readings(start_ns, stop_ns, node, after, limit)
    left_in_journal = journal.iter_kept_below(stop_ns, node=node, start_ns=start_ns)
    if after is not None:
        left_in_journal = (row for row in left_in_journal if (row[0], row[1]) > after)
    previous = None
    count = 0
    for row in heapq.merge(from_influx, left_in_journal, key=lambda row: (row[0], row[1])):
        key = (row[0], row[1])
        if key == previous:
            continue  # forwarded after the prune: in InfluxDB and still in the journal
        previous = key
        yield row
        count += 1
        if limit is not None and count >= limit:
            return


def readings(
    journal: Storage, influx: Optional[InfluxHistory], *, node: Optional[str] = None,
    start_ns: Optional[int] = None, stop_ns: Optional[int] = None, after: Optional[Cursor] = None,
    limit: Optional[int] = None, batch: int = BATCH,
) -> Iterator[list[Row]]:
    """Batches of rows as :meth:`Storage.iter_readings` yields them, over the whole history."""
    old, journal_start, journal_after = _plan(journal, influx, start_ns, stop_ns, after)
    if old is not None:
        rows = _old_rows(journal, influx, node, old, limit)
        delivered = 0
        while chunk := list(_take(rows, batch)):
            delivered += len(chunk)
            yield chunk
        if limit is not None:
            limit -= delivered
            if limit <= 0:
                return
    yield from journal.iter_readings(node, journal_start, stop_ns, batch, after=journal_after, limit=limit)


def page_end(
    journal: Storage, influx: Optional[InfluxHistory], *, node: Optional[str] = None,
    start_ns: Optional[int] = None, stop_ns: Optional[int] = None, after: Optional[Cursor] = None, limit: int,
) -> Optional[Cursor]:
    """The cursor of a page's last row when more rows follow it, else None (see :meth:`Storage.page_end`)."""
    old, journal_start, journal_after = _plan(journal, influx, start_ns, stop_ns, after)
    count, last = 0, None
    if old is not None:
        for ts, name, _, _ in _old_rows(journal, influx, node, old, limit + 1):
            count += 1
            if count == limit:
                last = (ts, name)
            elif count > limit:
                return last
    if count == limit:  # the page ends with the last old row: is there a journal row after it?
        more = next(journal.iter_readings(node, journal_start, stop_ns, 1, after=journal_after, limit=1), None)
        return last if more else None
    return journal.page_end(node, journal_start, stop_ns, after=journal_after, limit=limit - count)


def _take(rows: Iterator, n: int) -> Iterator:
    for _, row in zip(range(n), rows):
        yield row
