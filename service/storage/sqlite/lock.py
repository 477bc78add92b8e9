"""The singleton lock of a journal in the data dir: the data dir's own lock, already held.

``tswarm serve`` holds ``tswarm.lock`` in the data dir for the service's whole life (service/datadir.py),
so no second service ever runs on this journal; within the service, the one process that asks for
this lock (worker 0 of ``--workers N``: ``Config.runs_singletons``) is the only one that runs the
forwarder and the pruner. The lock below is therefore held from the first :meth:`try_acquire` until
:meth:`release`: the kernel releases the data dir's lock when the service dies, as PostgreSQL
releases its advisory lock with the session.
"""
from __future__ import annotations

from ..interface import SingletonLock


class DataDirLock(SingletonLock):
    def __init__(self) -> None:
        self._held = False

    def try_acquire(self) -> bool:
        self._held = True
        return True

    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._held = False


class LockRoom:
    def singleton_lock(self) -> SingletonLock:
        return DataDirLock()
