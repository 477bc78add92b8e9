"""Connections to PostgreSQL: the URL (and keeping its password out of every message), the one pool
of a process, transactions, the snapshot, and what a failure of the database becomes.

Every :class:`~tswarm.storage.postgres.PostgresStorage` of a process borrows from one
:class:`ConnectionPool` per URL (:func:`open_pool`, :func:`close_pool`): the app opens several
storages (the journal, a thread pool's, the forwarder's, the pruner's, each export's), and a pool
each would hold several connections each, where Heroku's small plans allow 20 in all. The pool
is made by the first storage to open and closed with the last. It belongs to the process that made
it (the key holds the PID): a worker forked after the parent made one makes its own, and never
uses nor closes the parent's, whose sockets it shares.

A connection failure (refused, reset, a server shutting down, a pool that cannot get a connection
in time) is :class:`StorageUnavailable`: nothing was done, try again later. Every message that may
quote the URL goes through :func:`scrub` first.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional
from urllib.parse import quote, unquote

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ..interface import StorageUnavailable, StorageUnusable

# psycopg_pool logs a warning for every failed connection attempt (dozens while the database is
# away); the writer logs one line when an outage begins and one when it is over (storage/group.py).
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

CONNECT_TIMEOUT_S = 5  # a host that does not answer at all: an error after this, not a hang
POOL_TIMEOUT_S = 5.0  # a storage call waits this long for a connection while the database is away
# psycopg_pool retries a failed connect with a doubling delay until this many seconds have passed,
# then gives up until a caller wants one: so a connection is tried again within a few seconds of the
# server's return, however long it was away (its default, 300 s, let the delay grow past a minute)
RECONNECT_S = 5.0
CHECK_IDLE_S = 1.0  # a connection idle this long is checked (one round trip) before it is lent again
POOL_SIZE = 5  # TSWARM_DATABASE_POOL's default (service/settings.py): a process's most connections but the writer's
FAILURES = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def _userinfo_ends(rest: str) -> set[int]:
    """Where the user part of a URL's text after ``://`` ends (the index of its ``@``), as libpq reads
    it (the first ``@`` before any ``/``), as urlsplit does (the last before any ``/ ? #``) and as the
    person who pasted a password unencoded meant it (the last ``@`` of all: a host, port or database
    name holds none): they differ when the password holds an ``@``, ``/``, ``?`` or ``#``, and every
    reading must be masked. (The last one masks the host too when only a query value holds an ``@``:
    a message then shows less of the URL, never the password.)"""
    libpq = rest.split("/", 1)[0].find("@")
    python = re.split(r"[/?#]", rest, maxsplit=1)[0].rfind("@")
    return {end for end in (libpq, python, rest.rfind("@")) if end >= 0}


def _password_params(query: str) -> Iterator[tuple[int, int]]:
    """The spans of the values of ``password=`` parameters in a URL's query, as libpq reads them (up
    to the next ``&``, its name %-decoded: ``pass%77ord=`` is one too)."""
    start = 0
    for param in query.split("&"):
        key, eq, _ = param.partition("=")
        if eq and unquote(key).strip().lower() == "password":
            yield start + len(key) + 1, start + len(param)
        start += len(param) + 1


def _password_spans(rest: str) -> list[tuple[int, int]]:
    """Where the password may be in a URL's text after ``://``, as (start, stop), in every reading: the
    user part's after its first ``:`` (see :func:`_userinfo_ends`), and each ``password=`` parameter's
    of the query, which begins at the first ``?`` after the user part as either reading ends it."""
    ends = _userinfo_ends(rest)
    spans = [(rest.find(":", 0, end) + 1, end) for end in ends if ":" in rest[:end]]
    for end in ends | {-1}:
        query_at = rest.find("?", end + 1)
        if query_at >= 0:
            spans += [(query_at + 1 + a, query_at + 1 + b) for a, b in _password_params(rest[query_at + 1:])]
    return spans


def redact(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``, the rest
    as written: read as text, so that a URL libpq or urlsplit cannot parse is masked too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    shown, done = [], 0
    for start, stop in sorted(set(_password_spans(rest))):
        if start < done:  # overlaps the span masked before (two readings of the same password)
            done = max(done, stop)
            continue
        shown += [rest[done:start], "***"]
        done = stop
    return scheme + sep + "".join(shown) + rest[done:]


def _secrets(url: str) -> list[str]:
    """The URL's password in every form a message may quote it, longest first: as written (each span of
    :func:`_password_spans`, and a parameter's up to a ``#``, where urlsplit ends the query), as libpq
    reads it, each also %-decoded and %-encoded."""
    rest = url.partition("://")[2]
    written = {rest[start:stop] for start, stop in _password_spans(rest)}
    written |= {text.split("#", 1)[0] for text in written}
    try:
        written.add(psycopg.conninfo.conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        pass
    forms = {form for text in written for form in (text, unquote(text), quote(unquote(text), safe=""))}
    return sorted((form for form in forms if form), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password as ``***`` where psycopg and libpq quote it, and nothing else
    changed: the URL itself (as :func:`redact` shows it), a ``password=`` value (the keyword form of a
    connection string), and a quoted value that is the password exactly (libpq's complaint about a
    bad %-escape or a space in it quotes the part it could not read). Replacing the password wherever
    its characters occur instead would garble the message when it is short or looks like a number:
    ``127`` in ``127.0.0.1``, ``p`` in ``port``."""
    secrets = _secrets(url)
    value = "|".join([r"'(?:[^'\\]|\\.)*'", *map(re.escape, secrets), r"[^\s&'\"]+"])
    keyword = re.compile(rf"(?i)(?<![\w%])(password\s*=\s*)(?:{value})")

    def outside_the_url(piece: str) -> str:
        piece = keyword.sub(r"\1***", piece)
        for secret in secrets:
            piece = piece.replace(f'"{secret}"', '"***"').replace(f"'{secret}'", "'***'")
        return piece

    if not url:
        return outside_the_url(text)
    shown = redact(url)  # the URL as shown already (callers put it in their messages) is left as it is
    urls = re.compile("|".join(re.escape(u) for u in sorted({url, shown}, key=len, reverse=True)))
    return shown.join(outside_the_url(piece) for piece in urls.split(text))


def _reason(exc: BaseException) -> str:
    """The first line of an error's message (its class's name when it has none)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _transient(exc: BaseException) -> bool:
    """Whether the server may well answer soon: it could not be reached, or it said it is starting,
    stopping or recovering; not when it answered with a refusal (a wrong password, no such database,
    no pg_hba.conf entry: libpq's ``FATAL:`` lines, which carry no SQLSTATE at connect)."""
    text = str(exc)
    return isinstance(exc, PoolTimeout) or "FATAL:" not in text or "the database system is" in text


def unavailable(exc: BaseException, url: str) -> StorageUnavailable:
    """The one-line error for a database that cannot serve now; its ``transient`` says whether the
    server may well answer soon (:func:`_transient`; `tswarm serve` waits for such a one at start)."""
    if isinstance(exc, PoolTimeout):
        reason = f"no connection within {POOL_TIMEOUT_S:g} s"
    else:
        reason = _reason(exc)
    error = StorageUnavailable(scrub(f"PostgreSQL at {redact(url)} is unavailable: {reason}", url))
    error.transient = _transient(exc)
    return error


def libpq_url(url: str) -> str:
    """``url`` as libpq reads it: a scheme of any case (``POSTGRES://``, which the settings take, as
    URLs' schemes are) in lower case, the only one libpq knows; the rest as written."""
    scheme, sep, rest = url.partition("://")
    return scheme.lower() + sep + rest if sep and scheme.lower() in ("postgres", "postgresql") else url


def connect(url: str, *, synchronous_commit: bool = True) -> psycopg.Connection:
    """A new connection in autocommit mode (transactions are explicit); :class:`StorageUnavailable`
    when the server cannot be reached."""
    try:
        conn = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        conn.execute(f"SET synchronous_commit = {'on' if synchronous_commit else 'off'}")
    except FAILURES as exc:
        raise unavailable(exc, url) from None
    except psycopg.Error as exc:  # a URL libpq cannot read (a bad %-escape, a space): no use trying again
        raise StorageUnusable(scrub(f"cannot use PostgreSQL at {redact(url)}: {_reason(exc)}", url)) from None
    return conn


class _Pooled(psycopg.Connection):
    """A connection of the pool that knows when it was last given back."""

    returned_at = 0.0  # set as Connections gives it back; 0: a new connection is checked on its first loan


def _has_news(conn: psycopg.Connection) -> bool:
    """Whether the server sent anything to an idle connection (it says so when it shuts down, then
    closes the socket): a look at the socket, no round trip."""
    poll = select.poll()
    poll.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poll.poll(0))


def _check_if_idle(conn: _Pooled) -> None:
    """The pool's check before a loan (a round trip), only for a connection idle a while or one the
    server spoke to while idle (a restart): a round trip on every loan would double the cost of a
    node's lookup. A connection whose server vanished silently a moment ago fails its call as the
    database's failure (503), and the pool drops it."""
    if time.monotonic() - conn.returned_at >= CHECK_IDLE_S or _has_news(conn):
        ConnectionPool.check_connection(conn)


def make_pool(url: str, size: int = POOL_SIZE) -> ConnectionPool:
    """A pool of at most ``size`` connections (one kept open while idle) that replaces a connection
    found broken (a restart of the server) by itself."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max(1, size),
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
        configure=lambda conn: conn.execute("SET synchronous_commit = on"),
        connection_class=_Pooled,
        check=_check_if_idle,
        timeout=POOL_TIMEOUT_S,
        reconnect_timeout=RECONNECT_S,
        num_workers=1,
        name="tswarm",
        open=True,
    )


@dataclass
class _Shared:
    pool: ConnectionPool
    users: int = 0


_POOLS: dict[tuple[int, str], _Shared] = {}  # (PID, URL) -> the pool of that process for that URL
_POOLS_LOCK = threading.Lock()


def open_pool(url: str, size: int, prepare: Callable[[psycopg.Connection], None]) -> ConnectionPool:
    """The process's pool for ``url`` (made if none is open: at most ``size`` connections), after
    ``prepare(conn)`` ran on one of its connections (the schema check of every storage that opens).

    The first opening prepares on a connection of its own, so that a server that cannot be reached
    or refuses the login says why at once, rather than after the pool's timeout; later ones borrow.
    Errors of ``connect`` and ``prepare`` come out as raised; the pool is then not taken."""
    key = (os.getpid(), url)
    with _POOLS_LOCK:
        shared = _POOLS.get(key)
        if shared is not None:
            shared.users += 1
    if shared is not None:
        try:
            with shared.pool.connection() as conn:
                prepare(conn)
        except BaseException:
            close_pool(url, shared.pool)
            raise
        return shared.pool
    conn = connect(url)
    try:
        prepare(conn)
    finally:
        conn.close()
    with _POOLS_LOCK:
        shared = _POOLS.get(key)  # another thread may have made it meanwhile
        if shared is None:
            shared = _POOLS[key] = _Shared(make_pool(url, size))
        shared.users += 1
        return shared.pool


def close_pool(url: str, pool: ConnectionPool) -> None:
    """Give back ``pool`` taken with :func:`open_pool`; the last to give it back closes it. A pool of
    another process (inherited through a fork) is left alone: its connections are the parent's."""
    key = (os.getpid(), url)
    with _POOLS_LOCK:
        shared = _POOLS.get(key)
        if shared is None or shared.pool is not pool:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _POOLS[key]
    pool.close()


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
                try:
                    yield conn
                finally:
                    conn.returned_at = time.monotonic()  # not the pool's reset hook: that one hands over to a thread
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
