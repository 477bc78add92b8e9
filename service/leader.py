"""Exactly one forwarder, one pruner and one alerter across every process and instance on one journal.

What must run once (the forwarder, the pruner: two would race on the cursor and do the work
twice; the alerts, service/alerts.py: two would POST each alert twice) runs in the process that holds the journal's singleton lock
(:meth:`tswarm.storage.Storage.singleton_lock`). :class:`Leader` is the loop around it, and knows no
SQL and no engine:

- it asks for the lock when the app starts (so a lone service forwards from its first request on)
  and then every :data:`CHECK_S`, while another process holds it or the database is away;
- once it has the lock it starts its duties (async context managers, entered in order) and asks
  every :data:`CHECK_S` whether the lock is still held;
- a check that says no, fails, or does not answer within :data:`ANSWER_S` stops the duties at once
  (the forwarder's write in flight is cancelled), lets the lock go, and the loop asks for it again.

On PostgreSQL every process of every instance competes, and the database releases the lock with
the holder's session (service/storage/postgres/lock.py): another process takes over within about
:data:`CHECK_S` of a holder killed, and within seconds of one whose machine or connection vanished.
A holder stops before another can take over, except when the database itself ended its session
(a restart, ``pg_terminate_backend``): then the two may overlap by up to one check, which costs
nothing but a batch written twice (timestamps are fixed, so InfluxDB keeps one point) because the
forward cursor never moves backwards. On SQLite the data dir's lock already makes one service per
journal (service/datadir.py), so worker 0 (``Config.runs_singletons``) holds the lock from the start.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncContextManager, Callable, Optional, Sequence

from .storage import SingletonLock, StorageUnavailable

log = logging.getLogger("tswarm.leader")

CHECK_S = 1.0  # how often the lock is asked for, or checked while held
ANSWER_S = 2.0  # a check unanswered this long counts as the lock lost (below the server's 5 s, lock.py)

Duty = tuple[str, Callable[[], AsyncContextManager[Any]]]  # (name: "forwarder", what to enter while leading)


class Leader:
    """Runs ``duties`` while this process holds a lock from ``new_lock()`` (see the module's docstring).

    ``running`` maps each duty's name to what its context manager yielded, while leading (the
    forwarder, for ``/healthz``); ``leading`` says whether it leads now."""

    def __init__(self, new_lock: Callable[[], SingletonLock], duties: Sequence[Duty], *,
                 check_s: float = CHECK_S, answer_s: float = ANSWER_S):
        self.new_lock = new_lock
        self.duties = list(duties)
        self.check_s = check_s
        self.answer_s = answer_s
        self.running: dict[str, Any] = {}
        self._lock: Optional[SingletonLock] = None
        self._thread: Optional[ThreadPoolExecutor] = None  # the lock's own: its calls never overlap
        self._stack: Optional[contextlib.AsyncExitStack] = None
        self._task: Optional[asyncio.Task] = None
        self._away: Optional[str] = None  # why the last try failed (logged once per outage: None since a success)
        self._releases: set[asyncio.Future] = set()
        self._closing = False

    @property
    def leading(self) -> bool:
        return self._stack is not None

    async def start(self) -> None:
        """Ask for the lock once (leading from here on when it is free), then keep at it in a task."""
        await self._step_safely()
        self._task = asyncio.create_task(self._loop(), name="leader")

    async def close(self) -> None:
        """Stop the duties, let the lock go, and wait for it to be gone."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._step_down(None)
        if self._releases:
            await asyncio.wait(self._releases)

    def _names(self) -> str:
        return " and ".join(f"the {name}" for name, _ in self.duties)

    async def _loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.check_s)
            await self._step_safely()

    async def _step_safely(self) -> None:
        try:
            await self._step()
        except Exception:  # never let the loop die (nobody would forward again), nor the app's start
            log.exception("the leader's check failed")
            await self._step_down("the check failed")

    async def _step(self) -> None:
        """One check: ask for the lock, or check the one held; start or stop the duties accordingly."""
        if self._lock is None:
            self._lock = self.new_lock()
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader-lock")
        if not self.leading:
            try:
                got = await self._ask(self._lock.try_acquire)
            except (StorageUnavailable, asyncio.TimeoutError) as exc:
                reason = str(exc) or f"no answer within {self.answer_s:g} s"
                if self._away is None:  # once an outage: its reason may change as the database restarts
                    log.warning("cannot ask for the singleton lock (trying again every %g s): %s", self.check_s, reason)
                self._away = reason
                self._abandon()
                return
            self._away = None
            if got:
                await self._step_up()
            return
        try:
            held = await self._ask(self._lock.held)
        except asyncio.TimeoutError:
            await self._step_down(f"the database did not answer the lock's check within {self.answer_s:g} s")
            return
        if not held:
            await self._step_down("the lock's session is gone")

    async def _ask(self, call: Callable[[], bool]) -> bool:
        # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancel that lands as the call
        # returns, and close() would wait for this loop for ever
        async with asyncio.timeout(self.answer_s):
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def _step_up(self) -> None:
        log.info("this process holds the singleton lock: it runs %s", self._names())
        stack = self._stack = contextlib.AsyncExitStack()  # set first: stopping meanwhile stops what started
        try:
            for name, duty in self.duties:
                self.running[name] = await stack.enter_async_context(duty())
        except Exception:
            log.exception("starting the %s failed; letting the lock go", name)
            await self._step_down(f"the {name} could not start")

    async def _step_down(self, why: Optional[str]) -> None:
        """Stop the duties at once (if running), then let the lock go. ``why`` None: the app stops."""
        stack, self._stack = self._stack, None
        if stack is not None:
            if why is None:
                log.info("stopping %s", self._names())
            else:
                log.warning("%s: stopping %s; asking for the lock again every %g s", why, self._names(), self.check_s)
            self.running.clear()
            try:
                await stack.aclose()
            except Exception:
                log.exception("stopping %s failed", self._names())
        self._abandon()

    def _abandon(self) -> None:
        """Release the lock and forget it, without waiting: its thread may still be stuck in a call
        on a dead connection (the release queues behind it); the next step makes a new lock."""
        lock, thread, self._lock, self._thread = self._lock, self._thread, None, None
        if lock is None:
            return
        release = asyncio.get_running_loop().run_in_executor(thread, lock.release)
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)
        release.add_done_callback(lambda f: f.cancelled() or f.exception() and log.warning(
            "releasing the singleton lock failed: %s", f.exception()))
        thread.shutdown(wait=False)
