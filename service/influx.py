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
import time
from email.utils import parsedate_to_datetime
from typing import Iterable, Optional

import aiohttp
from influxdb_client import Point, WritePrecision

from .journal import Reading
from .settings import Config

MEASUREMENT = "climate"
TAG_NODE = "node"
WRITE_TIMEOUT_S = 30


def point(reading: Reading) -> Point:
    return (
        Point(MEASUREMENT)
        .tag(TAG_NODE, reading.node)
        .field("temperature", float(reading.temperature))
        .field("humidity", float(reading.humidity))
        .time(reading.ts, WritePrecision.NS)
    )


def line_protocol(readings: Iterable[Reading]) -> bytes:
    """The readings as line protocol, one point a line."""
    return "\n".join(point(r).to_line_protocol() for r in readings).encode()


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
    """One InfluxDB to write to. ``await write(body, count)`` sends one line-protocol batch."""

    description = "InfluxDB"

    async def write(self, body: bytes, count: int) -> None:
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

    async def write(self, body: bytes, count: int) -> None:
        from influxdb_client.client.exceptions import InfluxDBError

        try:
            await self._write_api.write(bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.NS)
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

    async def write(self, body: bytes, count: int) -> None:
        compressed = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, body)
        try:
            status, message, retry_after = await self._post_write(compressed)
            if status == 404 and "database not found" in message:
                await self.create_database()
                status, message, retry_after = await self._post_write(compressed)
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
