"""Reading InfluxDB back: the readings of a range, as a stream, in ``(time, node)`` order.

:mod:`tswarm.history` asks for what the journal pruned; this module knows how to get it:

- v1 API (InfluxDB 1.x, :class:`V1History`): InfluxQL ``GET /query?chunked=true&chunk_size=N&epoch=ns``;
  InfluxDB answers one JSON document per chunk, one per line, read as they arrive. The same URL,
  database, user and password as the forwarder's writes.
- v2 API (:class:`V2History`): Flux through influxdb-client's ``query_api().query_stream``, pivoted
  so that each record is one reading, with its time as an integer of nanoseconds (Python's
  ``datetime`` would drop the last three digits).

``with_extra=True`` gives each reading's telemetry too (``vbat, rssi, awake_ms, lost`` after humidity,
None where the point has no such field: the seed's firmware sends none).

Memory stays constant whatever the range. When InfluxDB cannot answer, reading raises
:class:`tswarm.history.HistoryUnavailable`. Which one is built is decided by
:func:`tswarm.influx.endpoint` (``endpoint(config).open_history()``). Blocking code, meant for a
thread (the CLI, or the readers' export thread); no aiohttp here, and influxdb-client only for v2.
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from itertools import groupby
from typing import Iterable, Iterator, Optional

from ..history import HistoryUnavailable
from ..names import valid_node_name
from ..storage.interface import EXTRA_FIELDS
from ..timefmt import MIN_NS, rfc3339
from . import EXTRA_TYPES, MEASUREMENT, TAG_NODE, V1Endpoint, V2Endpoint, error_text

QUERY_TIMEOUT_S = 30  # per connect and per read: a chunk of InfluxDB's answer may take that long
CHUNK_SIZE = 10_000  # InfluxDB 1.x: points per JSON chunk

Row = tuple  # (ts_ns, node, temperature, humidity), with_extra: then (vbat, rssi, awake_ms, lost)


class InfluxHistory:
    """Readings from one InfluxDB, ``(ts, node, temperature, humidity)`` in ``(ts, node)`` order."""

    description = "InfluxDB"

    def readings(
        self, start_ns: Optional[int], stop_ns: int, node: Optional[str] = None,
        after: Optional[tuple[int, str]] = None, limit: Optional[int] = None, *, with_extra: bool = False,
    ) -> Iterator[Row]:
        """Readings with ``start_ns <= ts < stop_ns`` (of ``node`` only, when given), strictly after
        ``after=(ts, node)``, at most ``limit``; ``with_extra``: with their telemetry. Raises
        :class:`HistoryUnavailable`."""
        if after is not None and (start_ns is None or after[0] > start_ns):
            start_ns = after[0]  # rows of that instant up to `after` are dropped below
        rows = _in_node_order(self._checked(self._query(start_ns, stop_ns, node, with_extra), start_ns, stop_ns, node))
        if after is not None:
            rows = (row for row in rows if (row[0], row[1]) > after)
        for count, row in enumerate(rows, 1):
            yield row
            if limit is not None and count >= limit:
                return

    def _query(self, start_ns: Optional[int], stop_ns: int, node: Optional[str], with_extra: bool) -> Iterator[Row]:
        """The range's rows in time order (ties in any order)."""
        raise NotImplementedError

    def _checked(self, rows: Iterable[Row], start_ns: Optional[int], stop_ns: int, node: Optional[str]) -> Iterator[Row]:
        """``rows`` as asked for, or :class:`HistoryUnavailable`: in time order, within the range and of
        ``node`` when given. An answer that is not (a proxy that ignores the query string, a server
        that is not InfluxDB) would otherwise be merged into the export out of order, or as rows
        that were never stored: it is an InfluxDB that cannot give the readings."""
        low = MIN_NS if start_ns is None else start_ns
        previous = low
        for row in rows:
            ts = row[0]
            if not previous <= ts < stop_ns:
                what = "out of time order" if low <= ts < stop_ns else f"outside the range asked for ({low} <= time < {stop_ns})"
                raise self._unavailable(f"an answer that is not InfluxDB's: a point at {ts} {what}")
            if node is not None and row[1] != node:
                raise self._unavailable(f"an answer that is not InfluxDB's: a point of node {row[1]!r}, asked for {node!r}")
            previous = ts
            yield row

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


def _extra(values: Iterable) -> tuple:
    """A point's telemetry as the journal holds it (JSON gives 3.0 as 3: vbat is made a float again).
    ValueError for a value no point of tswarm holds there (text, a boolean, a fraction in an integer field)."""
    return tuple(None if v is None else _value(v, kind) for kind, v in zip(EXTRA_TYPES, values))


def _value(value, kind: type = float):
    """A field's value as ``kind`` (float: any finite number; int: a whole number), else ValueError:
    ``float()`` would take ``True`` or ``"23"``, and ``int()`` would cut ``-61.5`` to ``-61``."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        if kind is float:
            return float(value)
        if type(value) is int:
            return value
    raise ValueError(f"{value!r} is not a {'number' if kind is float else 'whole number'}")


def influxql(start_ns: Optional[int], stop_ns: int, node: Optional[str], with_extra: bool = False) -> str:
    """The InfluxQL of a range (InfluxDB 1.x): integer times are nanoseconds."""
    where = [f"time < {int(stop_ns)}"]
    if start_ns is not None:
        where.insert(0, f"time >= {int(start_ns)}")
    if node is not None:
        where.append(f"\"{TAG_NODE}\" = '{_escape(node, quote=chr(39))}'")
    extra = "".join(f', "{name}"' for name in EXTRA_FIELDS) if with_extra else ""
    return f'SELECT "temperature", "humidity"{extra}, "{TAG_NODE}" FROM "{MEASUREMENT}" WHERE {" AND ".join(where)}'


class V1History(InfluxHistory):
    """InfluxDB 1.x: InfluxQL ``/query`` with ``chunked=true``, read line by line as it streams."""

    def __init__(self, url: str, db: str, user: str = "", password: str = "",
                 chunk_size: int = CHUNK_SIZE, timeout_s: float = QUERY_TIMEOUT_S):
        self.url, self.db = url.rstrip("/"), db
        self.description = V1Endpoint(url, db).description
        self.chunk_size, self.timeout_s = chunk_size, timeout_s
        self.headers = {"Accept": "application/json"}
        if user:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"

    def _query(self, start_ns, stop_ns, node, with_extra=False) -> Iterator[Row]:
        params = {"db": self.db, "q": influxql(start_ns, stop_ns, node, with_extra), "epoch": "ns",
                  "chunked": "true", "chunk_size": str(self.chunk_size)}
        request = urllib.request.Request(f"{self.url}/query?{urllib.parse.urlencode(params)}", headers=self.headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._unavailable(f"HTTP {exc.code}: {error_text(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unavailable(getattr(exc, "reason", None) or exc) from None
        partial = None  # InfluxDB marks every chunk but the last "partial": true
        with response:
            for line in self._lines(response):
                if line.strip():
                    rows, partial = self._parse_chunk(line, with_extra)
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

    def _parse_chunk(self, line: bytes, with_extra: bool = False) -> tuple[list[Row], bool]:
        """The rows of one JSON chunk (at most ``chunk_size``), and whether more chunks follow.

        Anything but InfluxDB's own shape (``{"results": [{"statement_id": 0, "series": [...]}]}``,
        times as integers of nanoseconds, fields as numbers) is :class:`HistoryUnavailable`: a
        ``{}`` from a server that is not InfluxDB would otherwise read as a complete, empty answer."""
        try:
            chunk = json.loads(line)
        except ValueError:
            raise self._unavailable(f"an answer that is not JSON: {line[:200]!r}") from None
        if isinstance(chunk, dict) and "error" in chunk:
            raise self._unavailable(chunk["error"])
        try:
            return self._chunk_rows(chunk, with_extra)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._unavailable(
                f"an answer that is not InfluxDB's ({type(exc).__name__}: {exc}): {line[:200]!r}"
            ) from None

    def _chunk_rows(self, chunk, with_extra: bool) -> tuple[list[Row], bool]:
        results = chunk["results"]
        if not isinstance(results, list) or not results:
            raise ValueError("no results")
        rows, partial = [], False
        for result in results:
            if "error" in result:
                raise self._unavailable(result["error"])
            if "statement_id" not in result:
                raise ValueError("a result without its statement_id")
            partial = partial or result.get("partial") is True
            for series in result.get("series", ()):
                columns = series["columns"]
                t, temperature, humidity, name = (columns.index(c) for c in ("time", "temperature", "humidity", TAG_NODE))
                extra = [columns.index(c) if c in columns else None for c in EXTRA_FIELDS] if with_extra else []
                for values in series.get("values", ()):
                    if len(values) != len(columns):
                        raise ValueError(f"a row of {len(values)} values for {len(columns)} columns")
                    ts, node = values[t], values[name]
                    if type(ts) is not int:
                        raise ValueError(f"the time {ts!r} is not an integer of nanoseconds")
                    if values[temperature] is None or values[humidity] is None or node is None:
                        continue  # not a point tswarm wrote (those always have both fields and the node tag)
                    if not isinstance(node, str) or not valid_node_name(node):
                        raise ValueError(f"{node!r} is not a node's name")
                    # JSON has no float type: 23.0 arrives as 23; the journal's REAL reads back as 23.0.
                    row = (ts, node, _value(values[temperature]), _value(values[humidity]))
                    if with_extra:
                        row += _extra(None if i is None else values[i] for i in extra)
                    rows.append(row)
        return rows, partial


def flux(bucket: str, start_ns: Optional[int], stop_ns: int, node: Optional[str],
         after: Optional[tuple[int, str]] = None, limit: Optional[int] = None, with_extra: bool = False) -> str:
    """The Flux of a range (InfluxDB 2.x): one record per reading, in ``(time, node)`` order.

    ``ts`` is ``int(v: r._time)``, the time in nanoseconds. ``after`` and ``limit`` are applied by
    InfluxDB, so a page does not fetch more than it needs. ``with_extra``: the telemetry fields too,
    kept as columns (a record lacks those its point lacks) rather than named in ``map``.
    """
    fields = ("temperature", "humidity", *(EXTRA_FIELDS if with_extra else ()))
    wanted = " or ".join(f'r._field == "{f}"' for f in fields)
    lines = [
        f'from(bucket: "{_escape(bucket)}")',
        f"  |> range(start: {rfc3339(start_ns or 0)}, stop: {rfc3339(stop_ns)})",
        f'  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}" and ({wanted}))',
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
    if with_extra:
        columns = ", ".join(f'"{c}"' for c in ("_time", TAG_NODE, *fields))
        lines += [f"  |> keep(columns: [{columns}])", "  |> map(fn: (r) => ({r with ts: int(v: r._time)}))"]
    else:
        lines.append(
            f"  |> map(fn: (r) => ({{ts: int(v: r._time), node: r.{TAG_NODE}, temperature: r.temperature, humidity: r.humidity}}))"
        )
    return "\n".join(lines)


class V2History(InfluxHistory):
    """InfluxDB 2.x/3.x: Flux through influxdb-client's ``query_stream`` (records as they are parsed).

    The client is made at the first query: an export the journal answers alone never loads
    influxdb-client."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = QUERY_TIMEOUT_S):
        self.url, self.org, self.bucket = url, org, bucket
        self.description = V2Endpoint(url, token, org, bucket).description
        self._token, self._timeout_s = token, timeout_s
        self._client = None

    def _connected(self):
        if self._client is None:
            from influxdb_client import InfluxDBClient

            self._client = InfluxDBClient(
                url=self.url, token=self._token, org=self.org, timeout=int(self._timeout_s * 1000), retries=False
            )
        return self._client

    def readings(self, start_ns, stop_ns, node=None, after=None, limit=None, *, with_extra=False) -> Iterator[Row]:
        query = flux(self.bucket, start_ns, stop_ns, node, after, limit, with_extra)
        try:
            records = self._connected().query_api().query_stream(query, org=self.org)
        except Exception as exc:  # ApiException (an HTTP error), urllib3's connection errors...
            raise self._unavailable(_exception_text(exc)) from None
        with contextlib.closing(records):
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    return
                except Exception as exc:
                    raise self._unavailable(f"the answer broke off ({_exception_text(exc)})") from None
                values = record.values
                try:
                    ts, name = values["ts"], values[TAG_NODE]
                    if type(ts) is not int or not isinstance(name, str) or not valid_node_name(name):
                        raise ValueError(f"the time {ts!r} and node {name!r} of a record")
                    row = ts, name, _value(values["temperature"]), _value(values["humidity"])
                    if with_extra:
                        row += _extra(values.get(f) for f in EXTRA_FIELDS)
                except (KeyError, TypeError, ValueError) as exc:
                    raise self._unavailable(f"an answer that is not InfluxDB's ({type(exc).__name__}: {exc})") from None
                yield row

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _exception_text(exc: Exception) -> str:
    """What went wrong in influxdb-client: InfluxDB's answer (``HTTP 401: ...``), or the exception."""
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status}: {error_text(getattr(exc, 'body', None) or getattr(exc, 'reason', ''))}"
    return f"{type(exc).__name__}: {exc}"


def _escape(text: str, quote: str = '"') -> str:
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote)
