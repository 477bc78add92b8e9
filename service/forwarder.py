"""Store and forward: drain the journal to InfluxDB, in order, until every reading is written.

With ``TSWARM_STORE=influxdb`` the journal stays the place a 202 is promised from. The
:class:`Forwarder` reads readings with ``id > cursor`` in commit order (which is time order per
node), sends them in batches of up to ``TSWARM_FORWARD_BATCH`` and moves the cursor (kept in the
journal's ``meta``) only after InfluxDB answered 2xx. So a reading is written at least once; a
rewrite after a crash is harmless because its timestamp is fixed. A reading's telemetry (``vbat``,
``rssi``, ``awake_ms``, ``lost``) goes as fields of the same point, those the node sent. A kept
reading (sent with ``age``) has an older timestamp than readings forwarded before it, but a newer
id: the cursor, by id, takes it in its turn.

:class:`Delivery` is one batch's way to InfluxDB, shared by the forwarder and
``tswarm forward`` (the backfill):

- a write that fails for now (connection refused, timeout, 5xx, 429, 401/403/404) is retried
  with capped exponential backoff, or after ``Retry-After`` when InfluxDB says so, for ever;
- a 400/422 (InfluxDB refuses points for good) is narrowed down by splitting the batch in halves
  until the refused readings are found; those are recorded in the journal's ``rejected`` table
  with the reason, and the rest go on;
- a 413 splits the batch too.

What a write is (line protocol, the v1/v2 targets, their errors) lives in :mod:`tswarm.influx`;
this module keeps the loop: batches, order, backoff. What ``/healthz`` and ``tswarm status`` say
about the backlog is :func:`tswarm.store_status.store_status`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Optional, Sequence

from .influx import endpoint
from .influx.lines import LineEncoder, line_protocol
from .influx.write import WRITE_TIMEOUT_S, InfluxTarget, Rejected, TooLarge, WriteError
from .storage import FORWARD_LAST_ERROR, OutboxReading, OutboxReadingExtra, Storage, StorageUnavailable, storage_for
from .settings import Config

if TYPE_CHECKING:  # aiohttp.web, and the app's keys that import it, only where the app runs a forwarder:
    from aiohttp import web  # `tswarm forward` needs aiohttp's client alone (~17 ms less of its start)

log = logging.getLogger("tswarm.forwarder")

FIRST_BACKOFF_S = 0.5
MAX_RETRY_AFTER_S = 3600.0  # a Retry-After longer than an hour is taken as an hour
IDLE_CHECK_S = 60.0  # with no wake-up, look at the journal this often anyway
WAIT_NOTICE_S = 5.0  # `tswarm forward`: a write unanswered this long is reported (InfluxDB accepts but says nothing)
# Only this process's own commits wake the forwarder. Where other processes commit too (the other
# workers of `serve --workers N`, every other instance on one PostgreSQL database), it looks this
# often for their readings (an empty read of the journal: one primary-key lookup).
SIBLINGS_CHECK_S = 0.5
RAN_A_WHILE_S = 10.0  # a forwarder that ran this long before the journal failed it saw the journal work again


def backoff_delay(attempt: int, max_backoff: float, retry_after: Optional[float] = None, rand=random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first).

    ``Retry-After`` wins when InfluxDB sent one; otherwise 0.5 s doubling per attempt up to
    ``max_backoff``, with up to half of it taken off at random so many services do not retry in step.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
    ceiling = min(max_backoff, FIRST_BACKOFF_S * 2 ** min(attempt, 30))
    return ceiling * (1 - rand() / 2)


class Delivery:
    """Gets batches of readings into one InfluxDB, whatever it takes (see the module's docstring)."""

    def __init__(
        self,
        target: InfluxTarget,
        max_backoff: float,
        *,
        on_error: Optional[Callable[[str], Awaitable[None]]] = None,
        on_success: Optional[Callable[[], Awaitable[None]]] = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_wait: Optional[Callable[[str], None]] = None,
    ):
        """``on_wait``: told (instead of the log) why it waits, for someone at a terminal: each failed
        write with the delay before the next, and a write InfluxDB has not answered for ``WAIT_NOTICE_S``."""
        self.target = target
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.on_success = on_success
        self.sleep = sleep
        self.on_wait = on_wait
        self.failing = False  # the last write failed; on_success is called at the next answer

    async def deliver(self, readings: Sequence[OutboxReading], payload: Optional[bytes] = None) -> list[tuple[OutboxReading, str]]:
        """Write ``readings`` in order; returns the ones InfluxDB refused for good, with the reason.
        ``payload``: their line protocol through ``target.prepare``, when the caller built it already
        (see :class:`BatchReader`)."""
        if not readings:
            return []
        if payload is None:
            payload = await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.target.prepare(line_protocol(readings))
            )
        try:
            await self._write_until_answered(payload, len(readings))
            return []
        except Rejected as exc:
            # Even "dropped=N" for all N may be about the batch as a whole (a series limit), so
            # split until single readings are refused: the others may have been written, and
            # writing them again is harmless.
            if len(readings) == 1:
                log.warning("InfluxDB refused a reading of %s at %d for good: %s", readings[0].node, readings[0].ts, exc)
                return [(readings[0], str(exc))]
        except TooLarge as exc:
            if len(readings) == 1:
                return [(readings[0], str(exc))]
        half = len(readings) // 2  # first half first: order per node is kept
        return await self.deliver(readings[:half]) + await self.deliver(readings[half:])

    async def _write_until_answered(self, body: bytes, count: int) -> None:
        attempt = 0
        while True:
            try:
                await self._write(body, count)
            except WriteError as exc:
                delay = backoff_delay(attempt, self.max_backoff, exc.retry_after)
                if self.on_wait is not None:
                    self.on_wait(f"waiting for {self.target.description}: {exc}; retrying in {delay:.1f} s")
                else:
                    log.warning("writing %d reading(s) to %s failed (%s); retrying in %.1f s",
                                count, self.target.description, exc, delay)
                self.failing = True
                if self.on_error is not None:
                    await self.on_error(str(exc))
                await self.sleep(delay)
                attempt += 1
                continue
            except (Rejected, TooLarge):
                await self._answered()
                raise
            await self._answered()
            return

    async def _write(self, body: bytes, count: int) -> None:
        if self.on_wait is None:
            return await self.target.write(body, count)
        write = asyncio.ensure_future(self.target.write(body, count))
        try:
            await asyncio.wait({write}, timeout=WAIT_NOTICE_S)
            if not write.done():
                self.on_wait(f"waiting for {self.target.description} to answer a write of {count} reading(s):"
                             f" no answer for {WAIT_NOTICE_S:g} s (a write gives up after {WRITE_TIMEOUT_S:g} s and is retried)")
            return await write
        finally:
            write.cancel()  # stopped meanwhile (Ctrl-C): the write goes too; after it finished this does nothing

    async def _answered(self) -> None:
        """InfluxDB answered (2xx or a refusal): it is reachable and the setup works again."""
        if self.failing:
            self.failing = False
            if self.on_success is not None:
                await self.on_success()


class Forwarder:
    """The task that drains the journal (``id > cursor``) to InfluxDB; woken by each commit."""

    def __init__(self, config: Config, target: InfluxTarget, *, sleep=asyncio.sleep):
        self.config = config
        self.target = target
        self.wake = asyncio.Event()
        self.in_flight = 0  # readings of the batch being written now
        self.last_error: Optional[str] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forwarder")
        self._journal: Optional[Storage] = None
        self.delivery = Delivery(
            target, config.forward_max_backoff, on_error=self._failed, on_success=self._recovered, sleep=sleep
        )

    async def _db(self, operation: str, *args):
        """Run storage ``operation(*args)`` on the forwarder's own journal connection, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: getattr(self._journal, operation)(*args)
        )

    async def run(self) -> None:
        self._journal = await asyncio.get_running_loop().run_in_executor(
            self._executor, storage_for, self.config
        )
        next_batch: Optional[asyncio.Future] = None
        try:
            cursor = await self._db("forward_cursor")
            self.delivery.failing = await self._db("meta", FORWARD_LAST_ERROR) is not None
            log.info("forwarding to %s from reading id %d", self.target.description, cursor)
            reader = BatchReader(self._journal, self.target, self.config.forward_batch)
            loop = asyncio.get_running_loop()

            def read_after(after_id: int) -> asyncio.Future:
                return loop.run_in_executor(self._executor, reader.read, after_id)

            others_commit = self.config.workers > 1 or bool(self.config.database_url)
            idle_check = SIBLINGS_CHECK_S if others_commit else IDLE_CHECK_S
            self.wake.clear()  # before reading: a commit from now on wakes the next wait
            next_batch = read_after(cursor)
            while True:
                batch = await next_batch
                if batch is None:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow the cancel of a leader
                    # stepping down when a commit wakes it at that moment, and the forwarder would go on
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle_check):
                            await self.wake.wait()
                    self.wake.clear()
                    next_batch = read_after(cursor)
                    continue
                # Read and build the next batch while this one is written: InfluxDB works meanwhile.
                self.wake.clear()
                next_batch = read_after(batch.last_id)
                self.in_flight = len(batch)
                rejected = await self.delivery.deliver(batch, batch.payload)
                await self._db("mark_forwarded", batch.last_id, rejected)
                self.in_flight = 0
                cursor = batch.last_id
        finally:
            self.in_flight = 0
            if next_batch is not None:
                next_batch.cancel()  # the read itself finishes in the journal thread, before the close below
            await asyncio.get_running_loop().run_in_executor(self._executor, self._journal.close)

    async def _failed(self, message: str) -> None:
        self.last_error = message
        record = json.dumps({"at": time.time_ns(), "message": message})
        await self._db("set_meta", FORWARD_LAST_ERROR, record)

    async def _recovered(self) -> None:
        self.last_error = None
        await self._db("set_meta", FORWARD_LAST_ERROR, None)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


@contextlib.asynccontextmanager
async def forwarding(app: web.Application) -> AsyncIterator[Optional[Forwarder]]:
    """``store=influxdb``: run a :class:`Forwarder` while the block runs, woken by the app's commits;
    yields it. ``store=sqlite``: nothing (yields None). Entered by the process that holds the
    singleton lock (service/leader.py), and left at once when it loses it."""
    from . import keys  # here, not at the top: see TYPE_CHECKING above

    config = app[keys.CONFIG]
    if config.store != "influxdb":
        yield None
        return
    target = endpoint(config).open_target()
    forwarder = Forwarder(config, target)
    listeners = app[keys.WRITER].commit_listeners
    listeners.append(forwarder.wake.set)
    task = asyncio.create_task(_supervise(forwarder, config.forward_max_backoff), name="forwarder")
    try:
        yield forwarder
    finally:
        task.cancel()  # a batch in flight is simply sent again next time: the cursor did not move
        listeners.remove(forwarder.wake.set)
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the forwarder had stopped with an error")
        await target.close()
        forwarder.close()


async def _supervise(forwarder: Forwarder, max_backoff: float) -> None:
    """Run the forwarder; should it fail on something unexpected (the journal's disk), start it again."""
    attempt = 0
    waiting = False  # for the journal's database: said once, until a run lasts a while again
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await forwarder.run()
        except asyncio.CancelledError:
            raise
        except StorageUnavailable as exc:  # the database is away (PostgreSQL restarting): no traceback
            if loop.time() - started >= RAN_A_WHILE_S:
                waiting, attempt = False, 0
            if not waiting:
                log.warning("the forwarder waits for the journal, trying again: %s", exc)
                waiting = True
            forwarder.last_error = str(exc)
            await asyncio.sleep(backoff_delay(attempt, max_backoff))
            attempt += 1
        except Exception as exc:
            log.exception("the forwarder failed; starting it again")
            forwarder.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(backoff_delay(attempt, max_backoff))
            attempt += 1


async def backfill(
    journal: Storage,
    config: Config,
    start_ns: Optional[int],
    stop_ns: Optional[int],
    progress: Callable[[int], None] = lambda n: None,
    on_wait: Optional[Callable[[str], None]] = None,
) -> tuple[int, int]:
    """Send the readings with ``start_ns <= ts < stop_ns`` to the configured InfluxDB again.

    Same points, same write path as the forwarder; the forwarder's cursor is left alone (the
    timestamps are fixed, so readings InfluxDB has already are simply overwritten with themselves).
    Calls ``progress(n)`` after each batch, and ``on_wait(why)`` while InfluxDB keeps it waiting
    (see :class:`Delivery`). Returns ``(sent, rejected)``.
    """
    target = endpoint(config).open_target()
    delivery = Delivery(target, config.forward_max_backoff, on_wait=on_wait)
    sent = refused = 0
    after = journal.first_id_from(start_ns) if start_ns is not None else 0
    loop = asyncio.get_running_loop()
    batches = BatchReader(journal, target, config.forward_batch, start_ns, stop_ns)
    # One thread reads and builds the next batch while the current one is written.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill") as reader:
        next_batch = loop.run_in_executor(reader, batches.read, after)
        try:
            while (batch := await next_batch) is not None:
                next_batch = loop.run_in_executor(reader, batches.read, batch.last_id)
                rejected = await delivery.deliver(batch, batch.payload)
                if rejected:
                    await loop.run_in_executor(reader, journal.record_rejected, rejected)
                sent += len(batch) - len(rejected)
                refused += len(rejected)
                progress(len(batch))
        finally:
            await target.close()
    return sent, refused


class Batch(Sequence[OutboxReadingExtra]):
    """One batch of readings as the journal returns them (:meth:`Storage.outbox_rows` with the
    telemetry, or lean: node ids, not names), with their payload. ``OutboxReadingExtra`` objects are
    made only when looked at, which happens when InfluxDB refuses the batch and it is split."""

    def __init__(self, rows: list[tuple], names: dict[int, str], payload: bytes):
        self.rows, self.names, self.payload = rows, names, payload

    @property
    def last_id(self) -> int:
        return self.rows[-1][0]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._reading(row) for row in self.rows[index]]
        return self._reading(self.rows[index])

    def _reading(self, row: tuple) -> OutboxReadingExtra:
        id_, node_id, *rest = row  # a lean row's sixth item, None, is a vbat not sent: the rest default to None
        return OutboxReadingExtra(id_, self.names[node_id], *rest)


def _has_telemetry(row: tuple) -> bool:
    return row[5] is not None or row[6] is not None or row[7] is not None or row[8] is not None


class BatchReader:
    """Reads the journal batch by batch and builds each batch's payload (line protocol, then
    ``target.prepare``: gzip for the v1 API). Blocking: the forwarder and the backfill run it in
    their own thread, a batch ahead of the write, so InfluxDB is never kept waiting.

    While the last batch had no telemetry (readings of the seed's firmware), the next is asked for
    lean (:meth:`Storage.outbox_rows`: one column for the four); once one has, the next is read
    with all nine at once, until a batch comes without again."""

    def __init__(self, journal: Storage, target: InfluxTarget, limit: int,
                 start_ns: Optional[int] = None, stop_ns: Optional[int] = None):
        self.journal, self.target, self.limit = journal, target, limit
        self.start_ns, self.stop_ns = start_ns, stop_ns
        self.encoder = LineEncoder()  # kept from batch to batch: it remembers what Point rendered
        self.names: dict[int, str] = {}
        self.lean = True  # ask for the next batch lean

    def read(self, after_id: int) -> Optional[Batch]:
        """The readings after ``after_id`` with their telemetry (None when there are none)."""
        rows = self.journal.outbox_rows(after_id, self.limit, self.start_ns, self.stop_ns, with_extra=True, lean=self.lean)
        if not rows:
            return None
        self.lean = len(rows[0]) != 9 or not any(map(_has_telemetry, rows))
        if not self.names.keys() >= {row[1] for row in rows}:
            self.names = self.journal.node_names()
        payload = self.target.prepare(self.encoder.encode_rows(rows, self.names))
        return Batch(rows, self.names, payload)
