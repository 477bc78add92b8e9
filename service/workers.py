"""``tswarm serve``: one process, or a supervisor and N worker processes sharing the port.

With ``workers == 1`` the service runs in this process, as it always did. With more, this process
binds the port itself, once per worker, with ``SO_REUSEPORT`` (so the kernel spreads new
connections over the workers), and forks the workers, each serving on its own socket:

- the sockets stay open in the supervisor, so a worker that dies loses no connection: the ones the
  kernel queued for it wait until its replacement (started at once, with a log line) accepts them;
- a port already in use (by anything, including another ``--workers`` service) is a one-line error
  before any worker starts;
- SIGTERM or SIGINT is passed to every worker once; each finishes its in-flight requests and
  commits, as the single process does; the supervisor waits for all of them and exits 0;
- an address that does not resolve, a data dir another service holds or a journal that cannot be
  opened is one error before any worker starts; a worker that still exits before it served stops
  the whole service with a non-zero exit instead of being restarted in a loop.

One data dir, one service: :func:`serve` holds ``tswarm.lock`` in the data dir (``flock``, exclusive)
for the service's life, so a second ``tswarm serve`` on the same folder is refused with the PID of
the one that holds it, instead of running a second forwarder and pruner on the same cursor. The
workers inherit the supervisor's lock (one open file, shared by ``fork``); the kernel releases it
when the last of them exits, however it dies. The other commands (``node add``, ``export``,
``halt``...) do not take it: they share the journal with the service through SQLite's own locking.

What the workers share and what stays per worker: docs/deployment.md. What must run once (the
forwarder, the pruner) runs in the process holding the journal's singleton lock (service/leader.py):
with SQLite, worker 0 (``Config.runs_singletons``); with PostgreSQL, whichever process of every
worker of every instance on the database gets the database's lock. The one forwarding looks for
the readings the other processes commit every ``forwarder.SIBLINGS_CHECK_S``.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Callable, Optional

from aiohttp import web

from .app import create_app
from .server import run_app
from .datadir import DataDirInUse, hold_data_dir  # noqa: F401 (DataDirInUse: what serve raises; the CLI imports it here)
from .storage import StorageUnavailable, storage_for
from .settings import Config

log = logging.getLogger("tswarm.workers")

# Seconds SIGTERM waits for in-flight requests (a node's takes milliseconds; Heroku kills after 30 s).
SHUTDOWN_TIMEOUT = 10
BACKLOG = 128  # aiohttp's default listen backlog
STOP_GRACE_S = SHUTDOWN_TIMEOUT + 20  # then a worker that has not exited is killed
PARENT_CHECK_S = 1.0  # a worker whose supervisor is gone stops (gracefully) within this
START_WAIT_S = 45  # on Heroku, a database that cannot be reached at start is waited for this long (its boot timeout: 60 s)
QUICK_DEATH_S = 1.0  # a worker that dies sooner than this after starting is restarted after a pause

_fork = multiprocessing.get_context("fork")


class ListenError(Exception):
    """The port cannot be bound; nothing was started."""


def serve(config: Config, started: Optional[Callable[[int], None]] = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the exit status. ``started`` is called with the
    port once the data dir is held, its journal opens and the port is bound, before any request is
    served (the CLI announces the status page's link there).

    Before anything starts: the listen address must resolve, the data dir must be free (see
    :func:`hold_data_dir`), its journal must open (:class:`~tswarm.storage.StorageUnusable`) and the
    port must be free (:class:`ListenError`): nothing is announced before all of them hold."""
    _check_host(config.host, config.port)
    with hold_data_dir(config.data_dir) as say_port:
        where = _open_journal(config)  # a file that is not a journal: one error here, not one per worker
        sockets = bind(config.host, config.port, config.workers)
        port = sockets[0][0].getsockname()[1]  # --port 0: the one the kernel chose
        say_port(port)
        log.info(
            "serving on http://%s:%d, journal %s, store %s%s", config.host, port, where, config.store,
            f", {config.workers} workers" if config.workers > 1 else "",
        )
        if started is not None:
            started(port)
        if config.workers == 1:
            run_app(create_app(config), sock=sockets[0], shutdown_timeout=SHUTDOWN_TIMEOUT)
            return 0
        return Supervisor(config, sockets).run()


def _open_journal(config: Config) -> str:
    """Where the journal is, once it opens. On Heroku (``DYNO`` set), a database that cannot be reached
    now (restarting, a failover: PostgreSQL's ``transient`` unavailability) is waited for up to
    :data:`START_WAIT_S`, tried every second, with one warning: a dyno that exits at boot may wait many
    minutes for its restart. Elsewhere, and for a refusal (a wrong password, no such database) or
    SQLite's errors, the error is raised at once: one line for the person who typed the command, and a
    supervisor (systemd, docker-compose) restarts by its own rules."""
    deadline = time.monotonic() + (START_WAIT_S if os.environ.get("DYNO") else 0)
    waited = False
    while True:
        try:
            with storage_for(config) as journal:
                where = journal.where
        except StorageUnavailable as exc:
            if not getattr(exc, "transient", False) or time.monotonic() >= deadline:
                raise
            if not waited:
                log.warning("%s; waiting for it (up to %d s)", exc, START_WAIT_S)
                waited = True
            time.sleep(1)
            continue
        if waited:
            log.info("journal %s available: starting", where)
        return where


def _check_host(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {host}:{port}: the host {host!r} does not resolve ({exc.strerror});"
            " check --host or TSWARM_HOST"
        ) from None


def bind(host: str, port: int, count: int) -> list[list[socket.socket]]:
    """``count`` sets of listening sockets on ``host:port`` (one socket per address ``host`` resolves
    to), with SO_REUSEPORT when ``count`` > 1 (the workers share the port). Raises :class:`ListenError` when the port is taken, by any process."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sets: list[list[socket.socket]] = [[] for _ in range(count)]
    try:
        for family, address in addresses:
            # First without SO_REUSEPORT: fails if anybody holds the port, even another process
            # that would otherwise have shared it with us.
            with _socket(family, reuse_port=False) as probe:
                probe.bind(address)
                address = probe.getsockname()  # port 0: the port the kernel chose, for every worker
            for sockets in sets:
                sock = _socket(family, reuse_port=count > 1)  # one process: nobody may share its port
                sockets.append(sock)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.set_inheritable(True)
    except OSError as exc:
        for sockets in sets:
            for sock in sockets:
                sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sets


def _socket(family: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp: restart over TIME_WAIT
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "::" and "0.0.0.0" apart, as asyncio
    return sock


@dataclass
class Worker:
    index: int
    process: multiprocessing.Process
    ready: object  # multiprocessing.Event: set once the worker's app has started
    started: float = field(default_factory=time.monotonic)
    signalled: bool = False  # told to stop: a second SIGTERM could land after its event loop closed


class Supervisor:
    """Starts ``config.workers`` workers, restarts the ones that die, stops them all on a signal."""

    def __init__(self, config: Config, sockets: list[list[socket.socket]]):
        self.config = config
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self.failed = False
        self.sockets = sockets  # a set a worker, from bind()

    def run(self) -> int:
        port = self.sockets[0][0].getsockname()[1]
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("%d workers share http://%s:%d (supervisor pid %d)",
                     self.config.workers, self.config.host, port, os.getpid())
            for index in range(self.config.workers):
                self._start(index)
            while not self.stopping:
                self._watch()
            return self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for socks in self.sockets:
                for sock in socks:
                    sock.close()

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:
            return  # each worker gets one signal: a second would cut its shutdown short
        self.stopping = True
        log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        for socks in self.sockets:  # once the workers close theirs, new connections are refused, not queued
            for sock in socks:
                sock.close()
        self._signal_workers()

    def _signal_workers(self) -> None:
        """SIGTERM, once, to every worker that has not had one."""
        for worker in self.workers.values():
            if not worker.signalled and worker.process.is_alive():
                worker.signalled = True
                os.kill(worker.process.pid, signal.SIGTERM)

    def _start(self, index: int) -> None:
        ready = _fork.Event()
        process = _fork.Process(
            target=_worker_main, args=(self.config, index, self.sockets, ready, os.getpid()), name=f"tswarm-worker-{index}"
        )
        process.start()
        self.workers[index] = Worker(index, process, ready)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _watch(self) -> None:
        """Wait for a worker to exit (or a signal), and restart it unless it never served."""
        by_sentinel = {w.process.sentinel: w for w in self.workers.values()}
        for sentinel in wait(list(by_sentinel), timeout=1.0):
            worker = by_sentinel[sentinel]
            worker.process.join()
            if self.stopping:
                return
            code = _exit_description(worker.process.exitcode)
            if not worker.ready.is_set():
                log.error("worker %d (pid %d) %s before it could serve; stopping", worker.index, worker.process.pid, code)
                self.failed = True
                self._on_signal(signal.SIGTERM, None)
                return
            log.warning("worker %d (pid %d) %s; starting it again", worker.index, worker.process.pid, code)
            if time.monotonic() - worker.started < QUICK_DEATH_S:
                time.sleep(QUICK_DEATH_S)  # no busy loop if it keeps dying
                if self.stopping:
                    return
            self._start(worker.index)

    def _stop(self) -> int:
        # A worker started while the signal came has not had it yet. The others must not get it twice:
        # one that has finished and closed its event loop would die of the second (status -15).
        self._signal_workers()
        deadline = time.monotonic() + STOP_GRACE_S
        status = 1 if self.failed else 0
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.error("worker %d (pid %d) did not stop within %d s; killing it",
                          worker.index, worker.process.pid, STOP_GRACE_S)
                worker.process.kill()
                worker.process.join()
            if worker.process.exitcode != 0:
                if not self.failed:
                    log.error("worker %d (pid %d) %s while stopping", worker.index, worker.process.pid,
                              _exit_description(worker.process.exitcode))
                status = 1
        log.info("all workers stopped")
        return status


def _exit_description(exitcode: Optional[int]) -> str:
    """How a worker process ended, for the log: ``was killed by SIGKILL``, ``exited with status 1``."""
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def _worker_main(config: Config, index: int, sockets: list[list[socket.socket]], ready, supervisor_pid: int) -> None:
    """One worker: the whole service on its own sockets (runs in the forked child)."""
    mine = sockets[index]
    for i, socks in enumerate(sockets):
        if i != index:
            for sock in socks:
                sock.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the supervisor's handlers are not ours
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s"))
    app = create_app(config.with_(worker=index))

    async def worker_ctx(app: web.Application):
        """Last of the app's contexts, so everything before it has started when the worker says so."""
        _handle_signals_once()
        watch = asyncio.create_task(_stop_when_orphaned(supervisor_pid), name="supervisor-watch")
        ready.set()
        yield
        watch.cancel()

    app.cleanup_ctx.append(worker_ctx)
    run_app(app, sock=mine, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)


def _handle_signals_once() -> None:
    """SIGTERM/SIGINT stop the worker gracefully, once. A terminal's Ctrl-C or systemd reach every
    process of the group and the supervisor passes the signal on too; that second one is ignored
    instead of cutting the shutdown (and its last commit) short."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: None)
        raise web.GracefulExit()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def _stop_when_orphaned(supervisor_pid: int) -> None:
    """The supervisor was killed (SIGKILL, OOM): stop gracefully rather than serve on unsupervised."""
    while os.getppid() == supervisor_pid:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("the supervisor (pid %d) is gone; stopping", supervisor_pid)
    os.kill(os.getpid(), signal.SIGTERM)
