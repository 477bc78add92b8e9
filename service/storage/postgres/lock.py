"""The singleton lock: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own.

Every process of every instance on one database asks for :data:`SINGLETON_LOCK`; the one that gets
it forwards and prunes (service/leader.py). PostgreSQL releases a session's advisory locks when the
session ends, however it ends: the process killed (the kernel closes its socket), the connection
lost, ``pg_terminate_backend``. So there is no lease to expire and nothing to clean up after a crash.

The holder asks :meth:`AdvisoryLock.held` every second, on the same connection. Two settings bound
how long a vanished holder keeps the lock:

- on the server, ``idle_session_timeout`` (:data:`IDLE_SESSION_TIMEOUT_S`) ends the lock's session
  when no query came for that long: a holder whose machine went away without closing its
  connection (power cut, a network partition) loses the lock within seconds, not when TCP gives up;
- on the client, TCP keepalives and ``tcp_user_timeout`` make a query on a dead connection fail
  within a few seconds instead of hanging.

The holder stops as soon as one check fails or does not answer within ``leader.ANSWER_S`` (2 s, well
below :data:`IDLE_SESSION_TIMEOUT_S`), so it has stopped before the server could hand the lock to
another. A PgBouncer in transaction mode between tswarm and the database would move the session
under the lock: :meth:`held` asks ``pg_locks`` for this session's lock, so the holder then stops
rather than two of them running.
"""
from __future__ import annotations

import logging
from typing import Optional

import psycopg

from ..interface import SingletonLock
from .connection import CONNECT_TIMEOUT_S, FAILURES, unavailable

log = logging.getLogger("tswarm.storage.lock")

SINGLETON_LOCK = 0x74737761726D_03  # "tswarm" and a room, as schema.MIGRATION_LOCK (01) and CLOCK_LOCK (02)
IDLE_SESSION_TIMEOUT_S = 5  # the server ends the lock's session after this long without a query
KEEPALIVE = {  # libpq: a dead connection fails a query within ~4 s (idle 2 s, then 2 probes 1 s apart)
    "keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 2,
    "tcp_user_timeout": 3000,  # ms: data sent but not acknowledged for this long fails the connection
}


class AdvisoryLock(SingletonLock):
    """:data:`SINGLETON_LOCK` on a connection that this object opens (at the first
    :meth:`try_acquire`) and keeps until :meth:`release`, holding the lock or not."""

    def __init__(self, url: str):
        self._url = url
        self._conn: Optional[psycopg.Connection] = None
        self._held = False

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="tswarm singleton lock",
            **KEEPALIVE,
        )
        try:
            conn.execute(f"SET idle_session_timeout = '{IDLE_SESSION_TIMEOUT_S}s'")
        except psycopg.errors.UndefinedObject:  # PostgreSQL before 14: the server's TCP keepalives instead
            for name, value in (("idle", IDLE_SESSION_TIMEOUT_S), ("interval", 1), ("count", 3)):
                conn.execute(f"SET tcp_keepalives_{name} = {value}")
        return conn

    def _drop(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # ends the session: the server lets the lock go with it
            except psycopg.Error:
                pass

    def try_acquire(self) -> bool:
        if self._held:
            return self.held()
        while True:
            fresh = self._conn is None or self._conn.closed
            try:
                if fresh:
                    self._conn = self._connect()
                self._held = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s::bigint)", (SINGLETON_LOCK,)
                ).fetchone()[0]
                return self._held
            except FAILURES as exc:
                self._drop()
                if fresh:
                    raise unavailable(exc, self._url) from None
                # the kept connection was gone (the server restarted, or ended it): once more on a new one

    def held(self) -> bool:
        if not self._held or self._conn is None:
            return False
        try:
            (held,) = self._conn.execute(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1 AND granted)",
                (SINGLETON_LOCK >> 32, SINGLETON_LOCK & 0xFFFFFFFF),
            ).fetchone()
        except FAILURES as exc:
            log.warning("the singleton lock's connection failed: %s", unavailable(exc, self._url))
            held = False
        if not held:
            self._drop()
        return held

    def release(self) -> None:
        if self._held and self._conn is not None:
            try:  # at once: the session's end, below, reaches the server a moment later
                self._conn.execute("SELECT pg_advisory_unlock(%s::bigint)", (SINGLETON_LOCK,))
            except FAILURES:
                pass
        self._drop()


class LockRoom:
    _url: str

    def singleton_lock(self) -> SingletonLock:
        return AdvisoryLock(self._url)
