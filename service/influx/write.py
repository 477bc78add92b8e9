"""Writing to InfluxDB: one write of a batch of line protocol, v1 or v2.

Both ways in are gzipped:

- v2 API (:class:`V2Target`): ``/api/v2/write`` through influxdb-client's async write API;
- v1 API (:class:`V1Target`): InfluxDB 1.x's ``/write?db=...&precision=ns``, with optional
  user/password; a missing database is created with ``CREATE DATABASE`` when the user may.
  (influxdb-client only speaks ``/api/v2/write``, which InfluxDB 1.x has only from 1.8 on, so this
  one POST is made with aiohttp.)

Which one is built is decided by :func:`tswarm.influx.endpoint` (``endpoint(config).open_target()``).
A write either returns (InfluxDB answered 2xx) or raises one of the errors below; what to do
about them (retry, split, record) is the forwarder's business.
"""
from __future__ import annotations

import asyncio
import gzip
import time
from email.utils import parsedate_to_datetime
from typing import Optional

import aiohttp

from . import MAX_ERROR_CHARS, V1Endpoint, V2Endpoint, error_text

WRITE_TIMEOUT_S = 30
GZIP_LEVEL = 1  # 5,000 lines: 6.5x smaller in 1.5 ms at level 1; level 9 is 8.9x but takes 16.5 ms


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
    message = f"HTTP {status}: {message.strip()[:MAX_ERROR_CHARS]}"
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
        self.description = V2Endpoint(url, token, org, bucket).description
        self._client = InfluxDBClientAsync(url=url, token=token, org=org, enable_gzip=True, timeout=int(timeout_s * 1000))
        self._write_api = self._client.write_api()

    async def write(self, payload: bytes, count: int) -> None:
        """``payload`` is line protocol as it is: influxdb-client gzips it."""
        from influxdb_client import WritePrecision
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
        self.description = V1Endpoint(url, db).description
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
            if 200 <= resp.status < 300:  # written (204): nothing to read in the answer
                return resp.status, "", None
            return resp.status, resp.headers.get("X-Influxdb-Error") or error_text(text), resp.headers.get("Retry-After")

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); WriteError when the user may not."""
        name = self.db.replace("\\", "\\\\").replace('"', '\\"')
        async with self._session.post(
            f"{self.url}/query", data={"q": f'CREATE DATABASE "{name}"'}, auth=self._auth
        ) as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200 or '"error"' in text:
                raise WriteError(
                    f"database {self.db!r} does not exist and could not be created (HTTP {resp.status}: {error_text(text)})"
                )

    async def close(self) -> None:
        await self._session.close()
