"""Threads for the storage calls a request makes, so that none of them runs on the event loop.

A node's lookup on every PUT, ``GET /api/nodes``, a ``/metrics`` scrape and the admin API's writes
each may wait for SQLite (a write waits up to the busy timeout, 10 s, for another process's
write lock: ``tswarm node add`` beside the server, a second worker's commit). Waiting in a thread,
they keep ``/healthz`` and every other request answered meanwhile.

Every thread has a connection of its own: a connection waiting for a lock holds SQLite's mutex of
that connection, so a shared one would make the others wait too. Reads and writes have their own
threads: a PUT's lookup never queues behind an admin write that waits for the lock.

A node's record is the exception to "every storage call in a thread": :meth:`StoragePool.node_auth`
answers on the event loop from the engine's snapshot of nodes' records (service/storage/snapshot.py)
while the record is unchanged, without a thread hop, and reads it in a read thread only when the
snapshot misses (the first request of a node, the first after any change of the registry).

No aiohttp here; service/app.py makes one :class:`StoragePool` per app in a cleanup context.
"""
from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, TypeVar

from .storage import NodeAuth, Storage, StorageUnavailable, Writer
from .storage.snapshot import RegistrySnapshot

T = TypeVar("T")
READ_THREADS = 4  # lookups take well under a millisecond; a few threads cover any burst of PUTs


class StoragePool:
    """``await pool.read(fn, *args)`` runs ``fn(journal, *args)`` in a read thread, ``await
    pool.write(fn, *args)`` in the one write thread; ``journal`` is that thread's own."""

    def __init__(
        self,
        open_journal: Callable[[], Storage],
        read_threads: int = READ_THREADS,
        outages: Optional[Writer] = None,
    ):
        """``outages``: the writer, which knows whether the storage is away (:meth:`Writer.away`). While
        it is, a call gets its :class:`StorageUnavailable` at once (one shared probe, a few times a
        second) instead of each waiting for a connection in a thread of its own, so the threads stay
        free for when it returns; a call that fails so tells the writer (:meth:`Writer.unavailable`)."""
        self._open_journal = open_journal
        self._outages = outages
        self._local = threading.local()
        self._opened: list[Storage] = []
        self._lock = threading.Lock()
        self._snapshot: Optional[RegistrySnapshot] = None  # opened by the first node_auth
        self._snapshot_opening: Optional[asyncio.Future] = None
        self._closed = False
        self.snapshot_hits = 0  # lookups node_auth answered on the event loop
        self._reads = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="storage-read")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-write")

    def _journal(self) -> Storage:
        journal = getattr(self._local, "journal", None)
        if journal is None:
            journal = self._local.journal = self._open_journal()
            with self._lock:
                self._opened.append(journal)
        return journal

    def _call(self, fn: Callable[..., T], args, kwargs) -> T:
        if self._outages is not None:
            self._outages.refuse_if_away()  # noticed while this call waited for its thread
        return fn(self._journal(), *args, **kwargs)

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[..., T], args, kwargs) -> T:
        if self._outages is not None and (outage := await self._outages.away()) is not None:
            raise outage
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(self._call, fn, args, kwargs))
        except StorageUnavailable as exc:
            if self._outages is not None:
                self._outages.unavailable(exc)
            raise

    async def read(self, fn: Callable[..., T], *args, **kwargs) -> T:
        return await self._run(self._reads, fn, args, kwargs)

    async def write(self, fn: Callable[..., T], *args, **kwargs) -> T:
        return await self._run(self._writes, fn, args, kwargs)

    async def node_auth(self, name: str, *, fresh: bool = False) -> Optional[NodeAuth]:
        """The record of node ``name`` (:meth:`Storage.node_auth`): from the snapshot on the event loop
        while it is exact, else (and with ``fresh``: past every snapshot and cache) read in a read
        thread, and kept by the snapshot for the next lookups if nothing changed meanwhile."""
        snapshot = self._snapshot or await self._open_snapshot()
        if not fresh:
            record = snapshot.current(name)
            if record is not None:
                self.snapshot_hits += 1
                return record
        token, record = await self.read(snapshot.read, name, fresh)
        snapshot.keep(name, token, record)
        return record

    async def _open_snapshot(self) -> RegistrySnapshot:
        """The engine's snapshot, opened once (in a read thread: it may open a connection), by
        whichever lookup comes first; the others wait for it."""
        if self._snapshot_opening is None:
            self._snapshot_opening = asyncio.ensure_future(self.read(lambda storage: storage.registry_snapshot()))
        try:
            snapshot = await asyncio.shield(self._snapshot_opening)
        except BaseException:
            if self._snapshot_opening.done():  # failed (the storage away): the next lookup tries again
                self._snapshot_opening = None
            raise
        if self._closed:  # closed meanwhile: serve nothing, hold nothing
            snapshot.close()
            return RegistrySnapshot()
        self._snapshot = snapshot
        return snapshot

    def close(self) -> None:
        """Wait for the calls under way (blocking: call it from a thread), then close every connection."""
        self._closed = True
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            snapshot.close()
        for executor in (self._reads, self._writes):
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for journal in opened:
            journal.close()
