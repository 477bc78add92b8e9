"""Group commit, whatever the engine: requests hand a reading to the writer and wait; one thread
commits everything that waits in one transaction, then wakes them all.

:class:`GroupCommitWriter` is the asyncio half every engine's writer shares (the queue, the batches,
the answers); an engine's writer says how to connect, how to commit a batch (its timestamps) and how
to let go of its connection. Its calls run in the writer's own thread, never on the event loop.
"""
from __future__ import annotations

import abc
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .interface import StorageUnavailable, Writer


@dataclass
class Pending:
    """One reading waiting for its transaction."""

    node_id: int
    temperature: float
    humidity: float
    create: bool
    future: asyncio.Future


class GroupCommitWriter(Writer):
    """One writer thread, many waiting requests per transaction; see :class:`~tswarm.storage.Writer`."""

    def __init__(self, *, max_batch: int = 5000, max_queue: int = 50_000):
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._pending: list[Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self._conn: Any = None
        self.on_commit = None
        self.commit_listeners: list[Callable[[], None]] = []

    # -- what an engine says (each runs in the writer thread) ---------------------------------------

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new connection for :meth:`_commit`."""

    @abc.abstractmethod
    def _commit(self, batch: list[Pending]) -> list[int]:
        """Store ``batch`` in one transaction on ``self._conn``; the timestamps, in batch order."""

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- the shared half ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def append(self, node_id: int, temperature: float, humidity: float, *, create: bool = False) -> int:
        if self._closing:
            raise StorageUnavailable("the service is shutting down")
        if len(self._pending) >= self.max_queue:
            raise StorageUnavailable("the journal is overloaded")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(Pending(node_id, temperature, humidity, create, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                started = time.perf_counter()
                try:
                    stamps = await loop.run_in_executor(self._executor, self._commit, batch)
                except Exception as exc:  # disk full, I/O error, database gone: nothing of this batch was stored
                    error = exc if isinstance(exc, StorageUnavailable) else StorageUnavailable(f"{type(exc).__name__}: {exc}")
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(error)
                    continue
                if self.on_commit is not None:
                    self.on_commit(len(batch), time.perf_counter() - started)
                for listener in self.commit_listeners:
                    listener()
                for item, ts in zip(batch, stamps):
                    if not item.future.done():
                        item.future.set_result(ts)
            if self._closing:
                return
