"""InfluxDB, seen from tswarm: how a reading becomes a point, and one write of a batch of them.

Every reading is one point of measurement ``climate``, tag ``node``, float fields ``temperature``
and ``humidity``, at the reading's nanosecond timestamp (built with influxdb-client's ``Point``).
Two ways in, both gzipped:

- ``TSWARM_INFLUX_API=2``: the v2 write API (InfluxDB 2.x/3.x, or anything that speaks
  ``/api/v2/write``) through influxdb-client's async write API;
- ``TSWARM_INFLUX_API=1``: InfluxDB 1.x's ``/write?db=...&precision=ns``, with optional
  user/password; a missing database is created with ``CREATE DATABASE`` when the user may.
  (influxdb-client only speaks ``/api/v2/write``, which InfluxDB 1.x has only from 1.8 on, so this
  one POST is made with aiohttp.)

A write either returns (InfluxDB answered 2xx) or raises one of the errors below; what to do
about them (retry, split, record) is the forwarder's business.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Iterable, Mapping, Optional

import aiohttp
from influxdb_client import Point, WritePrecision

from .storage import OutboxReading
from .settings import Config

MEASUREMENT = "climate"
TAG_NODE = "node"
WRITE_TIMEOUT_S = 30
GZIP_LEVEL = 1  # 5,000 lines: 6.5x smaller in 1.5 ms at level 1; level 9 is 8.9x but takes 16.5 ms


def point(reading: OutboxReading) -> Point:
    return (
        Point(MEASUREMENT)
        .tag(TAG_NODE, reading.node)
        .field("temperature", float(reading.temperature))
        .field("humidity", float(reading.humidity))
        .time(reading.ts, WritePrecision.NS)
    )


def line_protocol(readings: Iterable[OutboxReading]) -> bytes:
    """The readings as line protocol, one point a line (a fresh :class:`LineEncoder`)."""
    return LineEncoder().encode(readings)


class LineEncoder:
    """Line protocol of readings, byte for byte what ``point(reading).to_line_protocol()`` gives, at a
    tenth of the cost.

    ``Point`` renders each distinct piece once: a node's series key (``climate,node=NAME``) and the
    text of each distinct temperature and humidity (``temperature=23.4``). A line joins the pieces
    in Point's own order (fields sorted by name) with the timestamp. A DHT sensor reports a few thousand
    distinct values, so after a short warm-up a line is one f-string; building a ``Point`` per
    reading cost ~7 µs and capped forwarding at a third of InfluxDB's speed (benchmarks/README.md).
    Zero and non-finite values always go through a whole ``Point`` (``-0.0 == 0.0`` would share a
    cache entry, and Point leaves non-finite fields out). tests/test_influx_lines.py checks the
    identity on generated readings.
    """

    MAX_CACHED = 100_000  # distinct values per field (and nodes); past it a cache starts again

    def __init__(self) -> None:
        self._keys: dict = {}  # node (name or journal id) -> series key
        self._temperature: dict[float, str] = {}
        self._humidity: dict[float, str] = {}

    def encode(self, readings: Iterable[OutboxReading]) -> bytes:
        return self.encode_rows(readings, _SAME)

    def encode_rows(self, rows: Iterable[tuple], names: Mapping) -> bytes:
        """Rows of ``(id, node, ts, temperature, humidity)``; ``names[node]`` is the node's name
        (:meth:`Storage.outbox_rows` gives node ids and :meth:`Storage.node_names` their names).
        An encoder's ``node`` must always mean the same node (one encoder per journal)."""
        keys, temperature, humidity = self._keys, self._temperature, self._humidity
        lines = []
        append = lines.append
        for id_, node, ts, t, h in rows:
            try:
                append(f"{keys[node]} {humidity[h]},{temperature[t]} {ts}")
            except KeyError:
                append(self._learn(node, OutboxReading(id_, names[node], ts, t, h)))
        return "\n".join(lines).encode()

    def _learn(self, node, reading: OutboxReading) -> str:
        """The reading's line from a whole ``Point``; remembers the pieces that may be reused."""
        line = point(reading).to_line_protocol()
        if node not in self._keys:
            key = point(reading._replace(temperature=1.0, humidity=1.0)).to_line_protocol()
            self._remember(self._keys, node, key[: key.rindex(" humidity=")])
        for cache, name, value in (
            (self._temperature, "temperature", reading.temperature),
            (self._humidity, "humidity", reading.humidity),
        ):
            if value and math.isfinite(value) and value not in cache:
                text = Point(MEASUREMENT).field(name, float(value)).to_line_protocol()
                self._remember(cache, value, text[len(MEASUREMENT) + 1:])
        return line

    def _remember(self, cache: dict, key, text: str) -> None:
        if len(cache) >= self.MAX_CACHED:
            cache.clear()
        cache[key] = text


class _Same:
    """``names[node] == node``: for rows that carry the node's name already (Readings)."""

    def __getitem__(self, node):
        return node


_SAME = _Same()


class WriteError(Exception):
    """InfluxDB did not take the batch now; the same write may succeed later."""

    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(Exception):
    """InfluxDB refused points for good (400/422: unparsable, field type conflict, beyond
    retention, series limit...). Others of the batch may have been written (a partial write)."""


class TooLarge(Exception):
    """413: the body is over InfluxDB's limit; smaller batches will go through."""


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def classify(status: int, message: str, retry_after: Optional[str]) -> Exception:
    """The error to raise for a non-2xx answer."""
    message = f"HTTP {status}: {message.strip()[:500]}"
    if status in (400, 422):
        return Rejected(message)
    if status == 413:
        return TooLarge(message)
    # 429/503 with Retry-After, other 5xx, and 401/403/404 (a setup to fix: the readings wait).
    return WriteError(message, parse_retry_after(retry_after))


class InfluxTarget:
    """One InfluxDB to write to. ``await write(prepare(body), count)`` sends one line-protocol batch.

    ``prepare`` (blocking, CPU-bound: the forwarder runs it in the thread that builds the batch)
    turns line protocol into what goes on the wire; ``write`` sends it."""

    description = "InfluxDB"

    def prepare(self, body: bytes) -> bytes:
        return body

    async def write(self, payload: bytes, count: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class V2Target(InfluxTarget):
    """The v2 write API through influxdb-client (``InfluxDBClientAsync``: nothing blocks the loop)."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = WRITE_TIMEOUT_S):
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.bucket, self.org = bucket, org
        self.description = f"InfluxDB v2 API at {url}, bucket {bucket!r}"
        self._client = InfluxDBClientAsync(url=url, token=token, org=org, enable_gzip=True, timeout=int(timeout_s * 1000))
        self._write_api = self._client.write_api()

    async def write(self, payload: bytes, count: int) -> None:
        """``payload`` is line protocol as it is: influxdb-client gzips it."""
        from influxdb_client.client.exceptions import InfluxDBError

        try:
            await self._write_api.write(bucket=self.bucket, org=self.org, record=payload, write_precision=WritePrecision.NS)
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            if status is None:
                raise WriteError(f"{type(exc).__name__}: {exc}") from exc
            raise classify(status, str(exc.message), exc.retry_after) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise WriteError(f"{type(exc).__name__}: {exc or 'timed out'}") from exc

    async def close(self) -> None:
        await self._client.close()


class V1Target(InfluxTarget):
    """InfluxDB 1.x: ``POST /write?db=DB&precision=ns``, gzipped; creates the database when it may."""

    def __init__(self, url: str, db: str, user: str = "", password: str = "", timeout_s: float = WRITE_TIMEOUT_S):
        self.url, self.db = url.rstrip("/"), db
        self.description = f"InfluxDB v1 API at {self.url}, database {db!r}"
        self._auth = aiohttp.BasicAuth(user, password) if user else None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    def prepare(self, body: bytes) -> bytes:
        """Gzipped (``Content-Encoding: gzip``)."""
        return gzip.compress(body, GZIP_LEVEL)

    async def write(self, payload: bytes, count: int) -> None:
        try:
            status, message, retry_after = await self._post_write(payload)
            if status == 404 and "database not found" in message:
                await self.create_database()
                status, message, retry_after = await self._post_write(payload)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise WriteError(f"{type(exc).__name__}: {exc or 'timed out'}") from exc
        if not 200 <= status < 300:
            raise classify(status, message, retry_after)

    async def _post_write(self, compressed: bytes) -> tuple[int, str, Optional[str]]:
        async with self._session.post(
            f"{self.url}/write", params={"db": self.db, "precision": "ns"}, data=compressed, auth=self._auth,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"},
        ) as resp:
            text = await resp.text(errors="replace")
            return resp.status, resp.headers.get("X-Influxdb-Error") or _error_of(text), resp.headers.get("Retry-After")

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); WriteError when the user may not."""
        name = self.db.replace("\\", "\\\\").replace('"', '\\"')
        async with self._session.post(
            f"{self.url}/query", data={"q": f'CREATE DATABASE "{name}"'}, auth=self._auth
        ) as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200 or '"error"' in text:
                raise WriteError(
                    f"database {self.db!r} does not exist and could not be created (HTTP {resp.status}: {text.strip()[:300]})"
                )

    async def close(self) -> None:
        await self._session.close()


def _error_of(text: str) -> str:
    """InfluxDB 1.x's ``{"error": "..."}``, or the text as it is."""
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text


def make_target(config: Config) -> InfluxTarget:
    """The target ``TSWARM_INFLUX_*`` describe. Call inside a running event loop."""
    if config.influx_api == "1":
        return V1Target(config.influx_url, config.influx_db, config.influx_user, config.influx_password)
    return V2Target(config.influx_url, config.influx_token, config.influx_org, config.influx_bucket)
