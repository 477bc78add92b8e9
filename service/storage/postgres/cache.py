"""The process's cache of nodes' records (``node_auth``), kept exact by the database's own word.

A node's lookup on every request is a round trip through psycopg: 80–130 µs of the service's CPU,
about half of what PostgreSQL costs a request more than SQLite (benchmarks/README.md). Registry
changes are rare, so each process keeps the records it read, and forgets all of them when the
database says the registry changed:

- the schema (service/storage/postgres/schema.py, version 2) has triggers that
  ``pg_notify('tswarm_registry', '')`` on every change of ``nodes`` (a row inserted, deleted or
  really changed, a ``TRUNCATE``) and of the ``halt_all`` row of ``meta``. Whoever makes the change
  (this instance, another one, the CLI, ``tswarm migrate``, SQL typed by hand) announces it, in
  the change's own transaction, delivered at its commit;
- one listener per process (:class:`RegistryCache`, a daemon thread with a connection of its own,
  ``LISTEN tswarm_registry``) clears the whole cache on every notification.

The cache serves only while the listener is connected and listening. It is cleared when the
listener (re)connects, after its ``LISTEN`` succeeded (a change made while it was away is then read
fresh), and cleared and bypassed from the moment its connection fails (the server restarting,
``pg_terminate_backend``, the network) until it listens again; every lookup then reads the
database, as without a cache. A lookup also reads the database while a notification waits unread
on the listener's socket (one ``poll``, no round trip) or is being read. A lookup's result is kept
only if no clear happened since the lookup began (:attr:`RegistryCache._generation`): a record read
just before a change, and stored just after its notification cleared the cache, is not kept.

The event loop asks the cache too (:meth:`RegistryCache.serving`, through :class:`LoopSnapshot`:
service/storage/snapshot.py): a record it may serve answers a request without the hop to a storage
thread; a miss is read in a thread, which keeps it here.

A change committed by this process itself (the admin API, a CLI command run in it) clears this
process's cache at once as well (:func:`changed_here`): its next lookup never waits for the notification.

A refusal does not rest on the cache alone: before a 401, a 405 or a 423 (a halted board stays awake)
the record is read once more from the database (``node_auth(name, fresh=True)``, service/auth.py and
service/protocol.py), so a new password, a node's first POST or a resume through another instance
applies on the next request even before the notification arrives. What the window can still give is
the opposite, for a moment: a request accepted on a record that was just changed (a node just removed
or halted elsewhere: its board sleeps once more, and gets its 423 on the next wake).

What this does not give: a change is seen by another process once its notification reached that
process's socket, which PostgreSQL sends as the change commits (well under a millisecond on
loopback), not a round trip's proof; a listener whose connection vanished without a word (a cable
cut) serves from its cache until TCP keepalives fail it (:data:`~.lock.KEEPALIVE`: about 4 s).

Behind a connection pooler (PgBouncer in transaction mode passes no notifications on) the
listener sees a backend PID other than the one its connection announced, says so once, and stops:
the cache is never used there.

Unknown names are not kept: anyone can send any name, and an unbounded map of them is memory that
an attacker chooses; such a request reads the database, as before. Records are a few hundred bytes,
one per registered node that sent a reading.

One cache per process and URL (:func:`open_cache`, :func:`close_cache`), as the pool is
(service/storage/postgres/connection.py): the key holds the PID, so a worker forked after the parent
made one makes its own, and a record inherited through a fork is never served (the parent's
listener thread does not exist in the child). Closed with the last storage that used it.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import Callable, Optional

import psycopg

from ..interface import NodeAuth
from ..snapshot import RegistrySnapshot
from .connection import CONNECT_TIMEOUT_S, unavailable
from .lock import KEEPALIVE
from .schema import REGISTRY_CHANNEL as CHANNEL

log = logging.getLogger("tswarm.storage.cache")

APPLICATION_NAME = "tswarm registry listener"
RETRY_FIRST_S = 0.1  # after a failed (re)connect, the listener waits this long, doubling up to RETRY_MOST_S
RETRY_MOST_S = 2.0
# a listener lost after listening this long logs a warning (and its return); lost sooner after its
# return (the server ending sessions again and again), a debug line: one outage, one line
STEADY_S = 10.0
STOP_WAIT_S = 1.0  # close() waits this long for the listener thread (a connect under way may take longer)


def _readable(fd: int) -> bool:
    """Whether anything waits unread on ``fd`` (a notification, an error, the end): no round trip."""
    poll = select.poll()
    poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poll.poll(0))


class BehindPooler(Exception):
    """The listener's session is not the connection's own (PgBouncer and its like answer with a
    backend PID of their own): notifications might never reach it, so the cache is never used."""

    def __str__(self) -> str:
        return ("the database connection goes through a pooler (the server's backend PID is not the one the connection"
                " announced): nodes' records are read from the database on every request, not cached")


class RegistryCache:
    """Records of nodes by name, served while the listener listens; see the module's docstring."""

    def __init__(self, url: str):
        self._url = url
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._records: dict[str, NodeAuth] = {}
        self._generation = 0  # bumped on every clear: a lookup keeps its result only if unchanged meanwhile
        self._listening = False  # connected, LISTEN done, the cache cleared since: records may be served
        self._fd = -1  # the listener's socket while listening
        self._stop = threading.Event()
        self._wake_read, self._wake_write = os.pipe()  # close() wakes the listener from its poll
        self._thread = threading.Thread(target=self._run, name="tswarm registry listener", daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        return self._listening

    def lookup(self, name: str, fetch: Callable[[str], Optional[NodeAuth]]) -> Optional[NodeAuth]:
        """The record of ``name``: the cached one while the listener listens and nothing waits unread
        on its socket, else ``fetch(name)`` (kept for the next lookup if nothing was cleared meanwhile)."""
        if os.getpid() != self.pid:  # inherited through a fork: the listener thread is the parent's
            return fetch(name)
        with self._lock:
            serve = self._servable()
            if serve:
                record = self._records.get(name)
                if record is not None:
                    return record
            generation = self._generation
        record = fetch(name)
        if serve and record is not None:
            with self._lock:
                if self._listening and self._generation == generation:
                    self._records[name] = record
        return record

    def serving(self, name: str) -> Optional[NodeAuth]:
        """The record of ``name`` if it is kept and may be served now (the listener listens, nothing
        waits unread on its socket), else None: no round trip, so the event loop may ask (:class:`LoopSnapshot`)."""
        if os.getpid() != self.pid:
            return None
        with self._lock:
            return self._records.get(name) if self._servable() else None

    def _servable(self) -> bool:
        """Under ``_lock``: records may be served now (listening, and no notification waits unread)."""
        return self._listening and not _readable(self._fd)

    def cached(self, name: str) -> Optional[NodeAuth]:
        """The record kept for ``name`` now (None: none), without reading anything."""
        with self._lock:
            return self._records.get(name)

    def forget(self) -> None:
        """A change of the registry this process committed itself: clear at once, without waiting
        for its notification (which clears again when it arrives). Listening goes on."""
        with self._lock:
            self._generation += 1
            self._records.clear()

    def _clear(self, *, listening: bool, fd: int = -1) -> None:
        with self._lock:
            self._generation += 1
            self._records.clear()
            self._listening = listening and not self._stop.is_set()
            self._fd = fd if self._listening else -1

    # -- the listener thread -------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME,
            **KEEPALIVE,
        )
        try:
            try:  # a server-wide idle_session_timeout would end this session every so often, for nothing
                conn.execute("SET idle_session_timeout = 0")
            except psycopg.errors.UndefinedObject:  # PostgreSQL before 14: no such setting
                pass
            conn.execute(f"LISTEN {CHANNEL}")
            if conn.execute("SELECT pg_backend_pid()").fetchone()[0] != conn.info.backend_pid:
                raise BehindPooler()
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        delay = RETRY_FIRST_S
        since = None  # when the listener last began listening
        lost = False  # its loss was logged (a warning): its return is, too
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except BehindPooler as exc:
                log.warning("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - whatever it is, the listener tries again (bypassed meanwhile)
                log.debug("the registry listener cannot connect: %s", unavailable(exc, self._url))
                self._wait(delay)
                delay = min(delay * 2, RETRY_MOST_S)
                continue
            delay = RETRY_FIRST_S
            try:
                if self._stop.is_set():
                    return
                while conn.pgconn.notifies() is not None:  # anything that came with LISTEN's answer: cleared below
                    pass
                self._clear(listening=True, fd=conn.fileno())
                since = time.monotonic()
                if lost:
                    log.info("the registry listener is listening again; nodes' records are cached again")
                    lost = False
                self._listen(conn)
            except Exception as exc:  # noqa: BLE001 - the connection's failure, or anything: bypassed until back
                if self._stop.is_set():
                    pass
                elif since is not None and time.monotonic() - since >= STEADY_S:
                    log.warning(
                        "the registry listener's connection failed (nodes' records are read from the database"
                        " until it is back): %s", unavailable(exc, self._url),
                    )
                    lost = True
                else:  # again soon after its return (sessions ended again and again): one line said it already
                    log.debug("the registry listener's connection failed: %s", unavailable(exc, self._url))
            finally:
                self._clear(listening=False)
                conn.close()

    def _listen(self, conn: psycopg.Connection) -> None:
        """Clear the cache on every notification until :meth:`close` (returns) or a failure (raises)."""
        pgconn = conn.pgconn
        poll = select.poll()
        poll.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        poll.register(self._wake_read, select.POLLIN)
        while True:
            events = dict(poll.poll())
            if self._wake_read in events or self._stop.is_set():
                return
            with self._lock:  # bypassed while the news is read: a lookup must not serve what it may change
                self._listening = False
            pgconn.consume_input()  # OperationalError when the connection is gone
            notified = False
            while pgconn.notifies() is not None:
                notified = True
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError(pgconn.get_error_message() or "the connection is closed")
            if notified:
                self._clear(listening=True, fd=pgconn.socket)
            else:  # something else (a parameter's new value): nothing of the registry changed
                with self._lock:
                    self._listening = not self._stop.is_set()

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` unless :meth:`close` is called meanwhile."""
        select.select([self._wake_read], [], [], seconds)

    def close(self) -> None:
        """Stop the listener and close its connection (twice is once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._clear(listening=False)
        os.write(self._wake_write, b"x")
        self._thread.join(STOP_WAIT_S)
        if not self._thread.is_alive():
            os.close(self._wake_read)
            os.close(self._wake_write)


class LoopSnapshot(RegistrySnapshot):
    """The event loop's face of the process's :class:`RegistryCache` for ``url``
    (service/storage/snapshot.py): a record the cache may serve is answered on the loop, without the
    hop to a storage thread; a miss is read (and kept, by the cache) in a thread as before."""

    def __init__(self, url: str):
        self._url = url
        self._cache: Optional[RegistryCache] = open_cache(url, self)

    def current(self, name: str) -> Optional[NodeAuth]:
        cache = self._cache
        return None if cache is None else cache.serving(name)

    def close(self) -> None:
        if self._cache is not None:
            self._cache = None
            close_cache(self._url, self)


class _Shared:
    def __init__(self, cache: RegistryCache):
        self.cache = cache
        self.users: set[int] = set()  # id() of each storage that took it: taking it twice is once


_CACHES: dict[tuple[int, str], _Shared] = {}  # (PID, URL) -> the cache of that process for that URL
_CACHES_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _CACHES_LOCK
    _CACHES_LOCK = threading.Lock()  # it may have been held by a thread of the parent at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def open_cache(url: str, user: object) -> RegistryCache:
    """The process's cache for ``url``, started if none is (its listener connects in the background:
    until then every lookup reads the database); ``user`` (a storage) gives it back with :func:`close_cache`."""
    key = (os.getpid(), url)
    with _CACHES_LOCK:
        shared = _CACHES.get(key)
        if shared is None:
            shared = _CACHES[key] = _Shared(RegistryCache(url))
        shared.users.add(id(user))
        return shared.cache


def changed_here(url: str) -> None:
    """This process committed a change of the registry of ``url``: its cache (if it has one) forgets
    every record now, so this process's next lookup is exact even before the notification arrives
    (a CLI command run in the server's process, the admin API)."""
    with _CACHES_LOCK:
        shared = _CACHES.get((os.getpid(), url))
    if shared is not None:
        shared.cache.forget()


def close_cache(url: str, user: object) -> None:
    """``user`` gives back the cache it took; the last one closes it. A cache of another process
    (inherited through a fork) is left alone: its listener and socket are the parent's."""
    key = (os.getpid(), url)
    with _CACHES_LOCK:
        shared = _CACHES.get(key)
        if shared is None or id(user) not in shared.users:
            return
        shared.users.discard(id(user))
        if shared.users:
            return
        del _CACHES[key]
    shared.cache.close()
