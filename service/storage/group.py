"""Group commit, whatever the engine: requests hand a reading to the writer and wait; one thread
commits everything that waits in one transaction, then wakes them all.

The writer thread drains the queue itself: once a group is committed it takes the next one at once,
without waiting for the event loop (whose iteration under load lasts milliseconds), and it answers a
group with one ``call_soon_threadsafe`` that sets every future of it (:meth:`GroupCommitWriter._settle`):
the loop wakes once a group, and the requests resume in the iteration after. A request that arrives
while the thread is idle starts it (one ``submit``); while it drains, a request only joins the queue.

:class:`GroupCommitWriter` is the asyncio half every engine's writer shares (the queue, the batches,
the answers); an engine's writer says how to connect, how to commit a batch (its timestamps) and how
to let go of its connection. Its calls run in the writer's own thread, never on the event loop.

An outage (the database away, a disk full) is logged twice: one warning when the first call fails
(:meth:`GroupCommitWriter.unavailable`, which the routes call too when their own storage call
fails) and one once commits or probes have succeeded for :data:`STABLE_S`, with how long it lasted
and how many calls were refused meanwhile; never a line per request, nor per flap. An engine that can tell cheaply whether its
database answers (PostgreSQL: a connection and ``SELECT 1``) has :meth:`_probe`: during an outage,
:meth:`GroupCommitWriter.away` asks it (one probe for every request that asks meanwhile), so a node's
request gets its 503 at once instead of waiting for a connection, and the first request after the
database returns goes through.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from .interface import NO_EXTRA, Duplicate, ReadingExtra, StorageUnavailable, Writer

if TYPE_CHECKING:
    # asyncio is imported where a writer starts, probes and closes, all on the running loop: the CLI
    # imports this module with the storage and never runs a writer (asyncio is ~50 ms of its start)
    import asyncio

log = logging.getLogger("tswarm.storage")

PROBE_INTERVAL_S = 0.25  # during an outage: the most often the writer asks whether the database is back
# An outage is logged over once storage worked this long without a failure: longer than a call may
# wait for a connection (PostgreSQL's pool: 5 s), so a call that began waiting during it belongs to it.
STABLE_S = 10.0


@dataclass
class Pending:
    """One reading waiting for its transaction."""

    node_id: int
    temperature: float
    humidity: float
    create: bool
    future: asyncio.Future
    extra: ReadingExtra = NO_EXTRA
    age_s: float = 0.0  # > 0: a kept reading, taken that long before its commit
    key: Optional[tuple[str, int]] = None  # (boot, seq): stored once per node


class GroupCommitWriter(Writer):
    """One writer thread, many waiting requests per transaction; see :class:`~tswarm.storage.Writer`."""

    def __init__(self, *, max_batch: int = 5000, max_queue: int = 50_000):
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._pending: list[Pending] = []  # appended on the loop, taken by the writer thread, under _mutex
        self._mutex = threading.Lock()
        self._draining: Optional[asyncio.Future] = None  # the writer thread's drain under way, None when idle
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self._conn: Any = None
        self.on_commit = None
        self.commit_listeners: list[Callable[[], None]] = []
        self.clock: Callable[[], int] = time.time_ns  # a batch's "now" (ns), read under the engine's write lock
        self._outage: Optional[StorageUnavailable] = None  # the last failure; None once a call succeeded since
        self._outage_since: Optional[float] = None  # when the logged outage began; None when none is
        self._recovered_at: Optional[float] = None  # the first success since its last failure
        self._refused = 0
        self._probing: Optional[asyncio.Future] = None  # the probe under way or the last one
        self._probed_at = 0.0
        self.cpu_seconds = 0.0  # the writer thread's CPU in its commits (time.thread_time): /metrics

    # -- what an engine says (each runs in the writer thread) ---------------------------------------

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new connection for :meth:`_commit`."""

    @abc.abstractmethod
    def _commit(self, batch: list[Pending]) -> list[int]:
        """Store ``batch`` in one transaction on ``self._conn``; the timestamps, in batch order
        (:func:`stamp_batch` gives them; a :class:`~.interface.Duplicate` for a key stored before)."""

    def _turn(self) -> contextlib.AbstractContextManager:
        """What the writer holds while it takes a group and commits it: nothing here. An engine whose
        writers of several processes queue for its write lock (SQLite's :class:`WriterLock`) returns
        that queue's lock, so a group is taken only once the writer's turn has come, and holds every
        reading that arrived while a sibling committed."""
        return contextlib.nullcontext()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()

    _probes = False  # an engine whose _probe says whether its database answers sets it

    def _probe(self) -> None:
        """Raise if the database does not answer now (only called when ``_probes``)."""

    # -- outages --------------------------------------------------------------------------------------

    def unavailable(self, exc: StorageUnavailable) -> None:
        self._refused += 1
        self._recovered_at = None
        if self._outage is None:
            self._outage, self._probing = exc, None
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("storage unavailable, answering 503 until it returns: %s", exc)

    def _available(self) -> None:
        """A commit or a probe succeeded: calls may go on. The outage is logged over once nothing
        failed for :data:`STABLE_S` (a database that flaps is one outage, not a line a flap)."""
        if self._outage is not None:
            self._outage, self._probing = None, None
        if self._outage_since is not None and self._recovered_at is None:
            self._recovered_at = time.monotonic()
            self._loop.call_later(STABLE_S, self._log_recovery)

    def _log_recovery(self) -> None:
        since, back = self._outage_since, self._recovered_at
        if since is None or back is None or time.monotonic() - back < STABLE_S * 0.99:
            return  # it failed again meanwhile (the next success logs), or a later success's timer will
        log.warning("storage available again after %.1f s (%d calls answered 503 meanwhile)", back - since, self._refused)
        self._outage_since, self._recovered_at, self._refused = None, None, 0

    def refuse_if_away(self) -> None:
        outage = self._outage
        if outage is not None and self._probes and not self._closing:
            raise outage

    def _probed(self, probe: asyncio.Future) -> None:
        self._probed_at = self._loop.time()
        if not probe.cancelled():
            probe.exception()  # retrieved here: a probe nobody waits for any more logs nothing

    async def away(self) -> Optional[StorageUnavailable]:
        """One probe at a time, shared by every caller, and at most one every
        :data:`PROBE_INTERVAL_S`: in between, the last probe's answer."""
        if self._outage is None or not self._probes or self._closing:
            return None
        import asyncio

        loop = self._loop
        if self._probing is None or (self._probing.done() and loop.time() - self._probed_at >= PROBE_INTERVAL_S):
            self._probing = loop.run_in_executor(self._executor, self._probe)
            self._probing.add_done_callback(self._probed)
        if self._probing.done() and (self._probing.cancelled() or self._probing.exception() is not None):
            return self._outage
        try:
            await asyncio.shield(self._probing)
        except Exception:
            return self._outage
        self._available()
        return None

    # -- the shared half ----------------------------------------------------------------------------

    async def start(self) -> None:
        import asyncio

        self._loop = loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)

    async def close(self) -> None:
        import asyncio

        if self._closing:
            return
        self._closing = True
        if self._draining is not None:
            await asyncio.shield(self._draining)  # every reading queued so far committed (or refused) and answered
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def append(
        self, node_id: int, temperature: float, humidity: float, *, create: bool = False,
        extra: ReadingExtra = NO_EXTRA, age_s: float = 0.0, key: Optional[tuple[str, int]] = None,
    ) -> int:
        if self._closing:
            raise StorageUnavailable("the service is shutting down")
        if len(self._pending) >= self.max_queue:
            raise StorageUnavailable("the journal is overloaded")
        future = self._loop.create_future()
        with self._mutex:
            self._pending.append(Pending(node_id, temperature, humidity, create, future, extra, age_s, key))
            idle = self._draining is None
            if idle:
                self._draining = self._loop.create_future()
        if idle:
            self._executor.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """The writer thread: commit groups until the queue is empty, each answered on the loop. The
        group is taken once the writer's turn (:meth:`_turn`) has come: what arrived while it waited
        for a sibling's commit goes into this commit, not the next."""
        loop = self._loop
        while True:
            with self._mutex:
                if not self._pending:
                    done, self._draining = self._draining, None
                    break
            started, cpu = time.perf_counter(), time.thread_time()
            batch = None
            try:
                with self._turn():
                    batch = self._take()  # only this thread takes from the queue: it is not empty
                    stamps = self._commit(batch)
            except Exception as exc:  # disk full, I/O error, database gone, no turn: nothing of it acknowledged
                if batch is None:  # the turn never came (a sibling held the lock too long): the group that waited
                    batch = self._take()
                loop.call_soon_threadsafe(self._settle, batch, None, exc, 0.0)
                continue
            finally:
                self.cpu_seconds += time.thread_time() - cpu  # read on the loop by a scrape: a float, whole
            loop.call_soon_threadsafe(self._settle, batch, stamps, None, time.perf_counter() - started)
        loop.call_soon_threadsafe(_finish, done)

    def _take(self) -> list[Pending]:
        """The next group, up to ``max_batch`` readings, off the queue."""
        with self._mutex:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        return batch

    def _settle(self, batch: list[Pending], stamps: Optional[list[int]], exc: Optional[Exception], seconds: float) -> None:
        """On the loop: a group's answers, every future of it at once."""
        if exc is not None:
            error = exc if isinstance(exc, StorageUnavailable) else StorageUnavailable(f"{type(exc).__name__}: {exc}")
            self.unavailable(error)
            self._refused += len(batch) - 1
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self._available()
        if self.on_commit is not None:
            self.on_commit(len(batch), seconds)
        for listener in self.commit_listeners:
            listener()
        for item, ts in zip(batch, stamps):
            if not item.future.done():
                item.future.set_result(ts)


def _finish(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


# -- the timestamps and keys of a batch, whatever the engine ------------------------------------------


def stamp_batch(
    batch: list[Pending],
    last: int,
    now: int,
    stored_key: Callable[[int, str, int], Optional[int]],
    taken: Callable[[int], bool],
) -> tuple[list[int], list[tuple[int, Pending]]]:
    """The answers of ``batch`` (committed under the engine's write lock, at ``now``, after the
    newest stamp ever given ``last``) and the ``(ts, item)`` rows to insert, in batch order.

    - a ``key`` its node has stored (``stored_key(node_id, boot, seq)``: the stored time, or None)
      or that an earlier item of this batch has: no row, and the stored time as a
      :class:`~.interface.Duplicate`;
    - a live reading: ``now``, or ``last + 1`` when the clock is not past ``last`` (strictly
      increasing, above every stamp given);
    - a kept one (``age_s > 0``): ``now - round(age_s * 1e9)``, moved forward 1 ns at a time until
      no reading of any node has it (``taken(ts)``: in the journal) nor any row of this batch; a
      later live reading still comes after it.
    """
    answers: list[int] = []
    rows: list[tuple[int, Pending]] = []
    keys: dict[tuple[int, str, int], int] = {}
    used: set[int] = set()
    for item in batch:
        if item.key is not None:
            boot, seq = item.key
            ident = (item.node_id, boot, seq)
            found = keys.get(ident)
            if found is None:
                found = stored_key(item.node_id, boot, seq)
            if found is not None:
                answers.append(Duplicate(found))
                continue
        if item.age_s > 0:
            ts = now - round(item.age_s * 1e9)
            while ts in used or taken(ts):
                ts += 1
            last = max(last, ts)
        else:
            ts = last = now if now > last else last + 1
        used.add(ts)
        if item.key is not None:
            keys[ident] = ts
        rows.append((ts, item))
        answers.append(ts)
    return answers, rows
