"""Connections to PostgreSQL: the URL (and keeping its password out of every message), the pool of
a storage object, transactions, the snapshot, and what a failure of the database becomes.

A connection failure (refused, reset, a server shutting down, a pool that cannot get a connection
in time) is :class:`StorageUnavailable`: nothing was done, try again later. Every message that may
quote the URL goes through :func:`scrub` first.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..interface import StorageUnavailable

CONNECT_TIMEOUT_S = 5  # a host that does not answer at all: an error after this, not a hang
POOL_TIMEOUT_S = 5.0  # a storage call waits this long for a connection while the database is away
POOL_MAX_SIZE = 4  # one thread at a time, but a few iterators may be open at once (history export)
FAILURES = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def _password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def redact(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (as typed, decoded or quoted) replaced by ``***``."""
    text = text.replace(url, redact(url))
    secrets = {_password(url), unquote(_password(url)), quote(unquote(_password(url)), safe="")}
    secrets |= {unquote(m) for m in re.findall(r"(?i)(?:^|&)password=([^&]*)", urlsplit(url).query)}
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def unavailable(exc: BaseException, url: str) -> StorageUnavailable:
    """The one-line error for a database that cannot serve now."""
    if isinstance(exc, PoolTimeout):
        reason = f"no connection within {POOL_TIMEOUT_S:g} s"
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageUnavailable(scrub(f"PostgreSQL at {redact(url)} is unavailable: {reason}", url))


def connect(url: str, *, synchronous_commit: bool = True) -> psycopg.Connection:
    """A new connection in autocommit mode (transactions are explicit); :class:`StorageUnavailable`
    when the server cannot be reached."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        conn.execute(f"SET synchronous_commit = {'on' if synchronous_commit else 'off'}")
    except FAILURES as exc:
        raise unavailable(exc, url) from None
    return conn


def make_pool(url: str) -> ConnectionPool:
    """A small pool that replaces a connection found broken (a restart of the server) by itself."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=POOL_MAX_SIZE,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
        configure=lambda conn: conn.execute("SET synchronous_commit = on"),
        check=ConnectionPool.check_connection,
        timeout=POOL_TIMEOUT_S,
        num_workers=1,
        name="tswarm",
        open=True,
    )


class Connections:
    """What every room of :class:`~tswarm.storage.postgres.PostgresStorage` talks to the database with.

    ``with self._connection() as conn`` lends a connection of the pool (or, inside :meth:`snapshot`,
    the snapshot's own); ``with self._transaction() as conn`` does the same inside a transaction.
    Failures of the database come out as :class:`StorageUnavailable`.
    """

    _url: str
    pool: ConnectionPool
    _pinned: Optional[psycopg.Connection] = None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            if self._pinned is not None:
                yield self._pinned
                return
            with self.pool.connection() as conn:
                yield conn
        except FAILURES as exc:
            raise unavailable(exc, self._url) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def _one(self, sql: str, params=()) -> tuple:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params=()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A REPEATABLE READ, READ ONLY transaction on one connection: every read inside sees the
        journal as of its first read. Nested, the outer one holds."""
        if self._pinned is not None:
            yield
            return
        with self._transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._pinned = conn
            try:
                yield
            finally:
                self._pinned = None
