"""Writing to InfluxDB: one write of a batch of line protocol, v1 or v2.

Both ways in are gzipped:

- v2 API (:class:`V2Target`): ``/api/v2/write`` through influxdb-client's async write API;
- v1 API (:class:`V1Target`): InfluxDB 1.x's ``/write?db=...&precision=ns``, with optional
  user/password; a missing database is created with ``CREATE DATABASE`` when the user may.
  (influxdb-client only speaks ``/api/v2/write``, which InfluxDB 1.x has only from 1.8 on, so this
  one POST is made with aiohttp.)

Which one is built is decided by :func:`tswarm.influx.endpoint` (``endpoint(config).open_target()``).
A write either returns (InfluxDB answered 204, or 201) or raises one of the errors below, with a
one-line message; what to do about them (retry, split, record) is the forwarder's business. An
answer InfluxDB does not give (a 200 page, a 400 that is not its JSON error: another server at the
URL) is a :class:`WriteError`, never a write taken or points refused for good.
"""
from __future__ import annotations

import asyncio
import gzip
import time
from email.utils import parsedate_to_datetime
from typing import Optional

import aiohttp

from . import V1Endpoint, V2Endpoint, error_text, is_influx_error

WRITE_TIMEOUT_S = 30
GZIP_LEVEL = 1  # 5,000 lines: 6.5x smaller in 1.5 ms at level 1; level 9 is 8.9x but takes 16.5 ms
WRITTEN = (201, 204)  # what InfluxDB (1.x, 2.x, 3.x, and what speaks its API) answers a write it took
# Said when the answer is not InfluxDB's: something else listens at the URL (a proxy, a login page, the
# wrong port or path), and it must not be taken for a write (a 200 page) or for points refused (a 400).
NOT_INFLUXDB = ("not an answer of InfluxDB's write API: is TSWARM_INFLUX_URL InfluxDB's own address,"
                " and TSWARM_INFLUX_API its API (1 for InfluxDB 1.x)?")
V1_CREDENTIALS = "TSWARM_INFLUX_USER and TSWARM_INFLUX_PASSWORD"
V2_CREDENTIALS = "TSWARM_INFLUX_TOKEN, and that it may write to the bucket"


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


def classify(status: int, body, retry_after: Optional[str], reason: str = "", credentials: str = V2_CREDENTIALS) -> Exception:
    """The error to raise for an answer that is not a write taken (not 201/204); ``body`` is the
    answer's (bytes or text), ``reason`` its status line's words (said when the body says nothing)."""
    said = error_text(body) or reason
    message = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status in (400, 422) and is_influx_error(body):
        return Rejected(message)
    if status == 413:
        return TooLarge(message)
    # 429/503 with Retry-After, other 5xx, and 401/403/404 (a setup to fix: the readings wait); a 2xx,
    # 400 or 404 that InfluxDB did not give (another server at the URL) too.
    if status in (401, 403):
        message += f" (check {credentials})"
    elif 200 <= status < 300 or (status in (400, 404, 422) and not is_influx_error(body)):
        message += f" ({NOT_INFLUXDB})"
    return WriteError(message, parse_retry_after(retry_after))


def _failure(exc: BaseException, timeout_s: float) -> WriteError:
    """A connection that failed, or an answer that never came or broke off, as one line."""
    if isinstance(exc, asyncio.TimeoutError):
        return WriteError(f"no answer within {timeout_s:g} s (TimeoutError)")
    if isinstance(exc, aiohttp.ClientResponseError) and exc.message:  # an answer aiohttp could not parse
        return WriteError(f"{type(exc).__name__}: {exc.message.splitlines()[0].rstrip(':')} ({NOT_INFLUXDB})")
    return WriteError(" ".join(f"{type(exc).__name__}: {exc}".split()))


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

        self.bucket, self.org, self.timeout_s = bucket, org, timeout_s
        self.description = V2Endpoint(url, token, org, bucket).description
        self._client = InfluxDBClientAsync(url=url, token=token, org=org, enable_gzip=True, timeout=int(timeout_s * 1000))
        self._write_api = self._client.write_api()

    async def write(self, payload: bytes, count: int) -> None:
        """``payload`` is line protocol as it is: influxdb-client gzips it."""
        from influxdb_client import WritePrecision
        from influxdb_client.client.exceptions import InfluxDBError

        try:
            written = await self._write_api.write(bucket=self.bucket, org=self.org, record=payload, write_precision=WritePrecision.NS)
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            if not status:
                raise _failure(exc, self.timeout_s) from exc
            body = getattr(exc, "body", None) or (exc.message if isinstance(exc.message, (bytes, str)) else "")
            raise classify(status, body, exc.retry_after, getattr(exc, "reason", "") or "") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _failure(exc, self.timeout_s) from exc
        if not written:  # a 2xx other than 201/204 (influxdb-client keeps neither its status nor its body)
            raise WriteError(f"a 2xx answer other than 201 or 204 ({NOT_INFLUXDB})")

    async def close(self) -> None:
        await self._client.close()


class V1Target(InfluxTarget):
    """InfluxDB 1.x: ``POST /write?db=DB&precision=ns``, gzipped; creates the database when it may."""

    def __init__(self, url: str, db: str, user: str = "", password: str = "", timeout_s: float = WRITE_TIMEOUT_S):
        self.url, self.db, self.timeout_s = url.rstrip("/"), db, timeout_s
        self.description = V1Endpoint(url, db).description
        self._auth = {}  # the Authorization header (the endpoint took user and password from the URL if it had them)
        if user:
            self._auth["Authorization"] = aiohttp.encode_basic_auth(user, password)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    def prepare(self, body: bytes) -> bytes:
        """Gzipped (``Content-Encoding: gzip``)."""
        return gzip.compress(body, GZIP_LEVEL)

    async def write(self, payload: bytes, count: int) -> None:
        try:
            status, body, reason, retry_after = await self._post_write(payload)
            if status == 404 and "database not found" in error_text(body):
                await self.create_database()
                status, body, reason, retry_after = await self._post_write(payload)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _failure(exc, self.timeout_s) from exc
        if status not in WRITTEN:
            raise classify(status, body, retry_after, reason, V1_CREDENTIALS)

    async def _post_write(self, compressed: bytes) -> tuple[int, str, str, Optional[str]]:
        """The answer's status, body, reason and Retry-After."""
        async with self._session.post(
            f"{self.url}/write", params={"db": self.db, "precision": "ns"}, data=compressed,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8", **self._auth},
        ) as resp:
            text = await resp.text(errors="replace")
            if resp.status in WRITTEN:  # written (204): nothing to read in the answer
                return resp.status, "", "", None
            body = text if text.strip() else resp.headers.get("X-Influxdb-Error", "")
            return resp.status, body, resp.reason or "", resp.headers.get("Retry-After")

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); WriteError when the user may not."""
        name = self.db.replace("\\", "\\\\").replace('"', '\\"')
        async with self._session.post(
            f"{self.url}/query", data={"q": f'CREATE DATABASE "{name}"'}, headers=self._auth
        ) as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200 or '"error"' in text:
                raise WriteError(
                    f"database {self.db!r} does not exist and could not be created (HTTP {resp.status}: {error_text(text)})"
                )

    async def close(self) -> None:
        await self._session.close()
