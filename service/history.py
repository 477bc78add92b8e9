"""The whole history for bulk reads: readings the journal pruned come back from InfluxDB.

With ``TSWARM_STORE=influxdb``, retention (:mod:`tswarm.retention`) deletes forwarded readings
from the journal, and the journal records its *horizon* (:meth:`Storage.pruned_before`): below
it, the journal is no longer complete. An export (``tswarm export``, ``GET /api/readings``) then
reads two parts, one after the other, with no gap and no overlap:

- ``time < horizon``: InfluxDB, merged with what the journal still holds below the horizon
  (readings not yet forwarded when it pruned, readings InfluxDB refused for good), each reading
  once, ordered by ``(time, node)``;
- ``time >= horizon``: the journal, ordered by ``(time, id)``, exactly as with ``store=sqlite``.

A journal that never pruned has no horizon, and InfluxDB is not asked at all; with
``store=sqlite`` none of this runs.

InfluxDB is read as a stream, with constant memory whatever the range (InfluxQL with chunking on
1.x, ``query_stream`` on 2.x: :mod:`tswarm.influx.query`). It is imported only when a store of
``influxdb`` opens it (:func:`open_history`), so an export that the journal answers alone never
loads aiohttp or influxdb-client.

When InfluxDB cannot answer for a range the journal no longer holds, reading fails with
:class:`HistoryUnavailable`: an export is never silently shorter than what was stored.

Passes and cursors (see :mod:`tswarm.export` for the tokens, docs/api.md for readers): a kept reading
arrives with an older time than readings stored before it, so time order alone cannot say what a
reader has not seen yet. Ids can: they grow in commit order, every reading's included
(service/storage/interface.py). A reader therefore goes through the journal in *passes*: a pass is
the readings with ``lo < id <= hi``, in time order; the first pass (``lo = 0``) is the whole
history, each later one the readings that arrived since the pass before, whatever their time.
The ``hi`` of a pass is the newest id of the snapshot its first page is read from. A
:class:`Cursor` names the pass and the last row delivered in it: a row of the journal by
``(time, id)``, a row of the InfluxDB part (first pass only) by ``(time, node)``, which is unique
because no two readings of a node share a timestamp. A page that reaches the end of its pass goes
on with the next one, in the same snapshot; the cursor after the last row of the last pass is
"the pass after ``hi``", so a reader that comes back later gets exactly what arrived meanwhile.

Blocking code, meant for a thread (the CLI, or the readers' export thread); no aiohttp here.
"""
from __future__ import annotations

import heapq
from itertools import groupby
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Optional, Union

from .settings import Config
from .storage import Storage
from .storage.interface import EXTRA_FIELDS

if TYPE_CHECKING:
    from .influx.query import InfluxHistory

BATCH = 5000  # rows per batch handed to the export

Row = tuple  # (ts_ns, node, temperature, humidity, vbat, rssi, awake_ms, lost): None where not sent
Position = Union[tuple[int, int], tuple[int, str]]  # the last row delivered: (ts, journal id) or (ts, node)
_ABSENT = (None,) * len(EXTRA_FIELDS)


class HistoryUnavailable(Exception):
    """InfluxDB could not give the readings of a range the journal no longer holds."""


class CursorExpired(Exception):
    """Readings that arrived after a cursor's pass were pruned from the journal before the reader came
    back for them (a kept reading older than the journal's retention): InfluxDB has them, but it keeps
    no ids, so it cannot tell them from the readings the reader has had."""


class Cursor(NamedTuple):
    """Where a reader is: in the pass over the readings with ``lo < id <= hi``, just after the row
    ``(ts, row)`` of it (``row`` a journal id, or a node name below the horizon; ``ts`` None: at the
    pass's start). ``hi`` None: a pass that has not started, over every id above ``lo``; the page
    that starts it fixes its ``hi`` (the newest id it sees)."""

    ts: Optional[int] = None
    row: Union[int, str, None] = None
    lo: int = 0
    hi: Optional[int] = None

    @property
    def position(self) -> Optional[Position]:
        return None if self.ts is None else (self.ts, self.row)


def as_cursor(after: Union[Cursor, Position, None]) -> Optional[Cursor]:
    """A :class:`Cursor` for ``after``. A bare ``(ts, id)`` (the tokens of tswarm before kept
    readings, when times and ids grew together) is the first pass up to that id, at that row: then
    every reading stored after it comes, whatever its time. A bare ``(ts, node)`` is the first pass
    at that row, its ``hi`` fixed now."""
    if after is None or isinstance(after, Cursor):
        return after
    ts, row = after
    return Cursor(ts, row, 0, None if isinstance(row, str) else row)


class Pass(NamedTuple):
    """The part of one pass a page (or an export) delivers: after ``after``, at most ``limit`` rows
    (None: to the pass's end). ``ids`` is the storage's ``ids=`` for it (None: every row of the snapshot)."""

    lo: int
    hi: int
    after: Optional[Position]
    ids: Optional[tuple[Optional[int], Optional[int]]]
    limit: Optional[int] = None


class Page(NamedTuple):
    """What one export delivers (its passes, in order), the cursor to resume after it, and whether
    rows follow it already (in the snapshot it was planned in)."""

    passes: tuple[Pass, ...]
    resume: Cursor
    more: bool
    horizon: Optional[int] = None  # the journal's, when InfluxDB answers below it
    arrived: frozenset = frozenset()  # (ts, node) below the horizon of ids after the first pass: a later pass has them


def open_history(config: Config) -> Optional[InfluxHistory]:
    """The InfluxDB that holds what the journal pruned (``TSWARM_INFLUX_*``); None with ``store=sqlite``.

    Use it as a context manager: ``with open_history(config) or contextlib.nullcontext() as influx``.
    Only here, with ``store=influxdb``, is :mod:`tswarm.influx` imported.
    """
    if config.store != "influxdb":
        return None
    from .influx import endpoint

    return endpoint(config).open_history()


def journal_cursor(after: Optional[Position]) -> Optional[tuple[int, int]]:
    """A position in the journal's ``(time, id)`` order. A ``(time, node)`` position resumes at its
    instant (rows of that one instant may come again; never one is skipped)."""
    if after is None or isinstance(after[1], int):
        return after
    return after[0], 0


# -- planning a page: which passes, how far, and the cursor after it --------------------------------


def plan(
    journal: Storage, influx: Optional[InfluxHistory], *, node: Optional[str] = None,
    start_ns: Optional[int] = None, stop_ns: Optional[int] = None,
    after: Union[Cursor, Position, None] = None, limit: Optional[int] = None,
) -> Page:
    """The page that follows ``after`` (None: the first), of at most ``limit`` rows (None: all), as
    of the journal's snapshot (call it inside :meth:`Storage.snapshot`, with the export).

    Raises :class:`CursorExpired` (the cursor cannot resume without missing a reading) and, when
    the page reaches below the horizon with ``limit``, :class:`HistoryUnavailable`."""
    cursor = as_cursor(after) or Cursor()
    # The newest id ever given: with store=influxdb only forwarded readings are pruned, so when the
    # newest reading is gone the forward cursor is its id.
    newest = max(journal.last_reading_id(), journal.forward_cursor())
    horizon = journal.pruned_before() if influx is not None else None
    if cursor.hi is None:
        spans = [(cursor.lo, max(newest, cursor.lo), cursor.position)]
    else:
        spans = [(cursor.lo, cursor.hi, cursor.position)]
        if newest > cursor.hi:
            spans.append((cursor.hi, newest, None))
    top = spans[-1][1]
    passes = [
        Pass(lo, hi, position, None if lo == 0 and hi >= newest else (lo or None, hi))
        for lo, hi, position in spans if lo == 0 or hi > lo  # the first pass has InfluxDB's part, even when the journal is empty
    ]
    arrived = frozenset()
    if horizon is not None and passes and passes[0].lo == 0 and passes[0].hi < newest:
        arrived = frozenset(
            (row[0], row[1]) for rows in journal.iter_readings(node, start_ns, horizon, ids=(passes[0].hi, None))
            for row in rows
        )
    page = Page((), Cursor(lo=top), False, horizon, arrived)
    for p in passes:
        _refuse_if_pruned(journal, horizon, p)
    if limit is None:
        return page._replace(passes=tuple(passes))
    scope = (journal, influx, page, node, start_ns, stop_ns)
    chosen, remaining = [], limit
    for i, p in enumerate(passes):
        count, end = _pass_end(*scope, p, remaining)
        if end is not None:
            chosen.append(p._replace(limit=remaining))
            return page._replace(passes=tuple(chosen), resume=Cursor(*end, p.lo, p.hi), more=True)
        chosen.append(p)
        remaining -= count
        if remaining == 0:
            more = any(_pass_end(*scope, later, 1)[0] for later in passes[i + 1:])
            return page._replace(passes=tuple(chosen), resume=Cursor(lo=p.hi) if more else page.resume, more=more)
    return page._replace(passes=tuple(chosen))


def _refuse_if_pruned(journal: Storage, horizon: Optional[int], p: Pass) -> None:
    """:class:`CursorExpired` when a later pass (whose rows only the journal can give) lacks a
    reading that retention pruned before the pass delivered it. Ids grow by one per reading, so a
    pass holds ``hi - lo`` of them unless some were pruned; pruned ones are older than the horizon,
    so only a pass still below it can miss one."""
    if horizon is None or p.lo == 0 or (p.after is not None and p.after[0] >= horizon):
        return
    if journal.count_readings_in(ids=(p.lo, p.hi)) < p.hi - p.lo:
        raise CursorExpired(
            "readings that arrived after this cursor are no longer in the journal (retention pruned them:"
            " they were older than TSWARM_JOURNAL_RETENTION when they arrived); read the range again without a cursor"
        )


def _split(page: Page, p: Pass, start_ns, stop_ns):
    """None when the journal alone answers pass ``p``; else ``(old, journal_start, journal_after)``:
    ``old`` is ``(start, stop, after)`` of the part below the horizon (None when ``p`` does not
    reach below it), then where the journal's part starts."""
    horizon = page.horizon
    if horizon is None or p.lo > 0:  # a later pass: readings that arrived since, all in the journal
        return None
    old_stop = horizon if stop_ns is None else min(stop_ns, horizon)
    # A (time, id) position below the horizon was handed out before the journal pruned past it:
    # :func:`_old_rows` resumes just after that row (:func:`_after_journal_row`).
    old_after = p.after
    lowest = old_after[0] if old_after is not None else start_ns
    old = (start_ns, old_stop, old_after) if lowest is None or lowest < old_stop else None
    journal_start = horizon if start_ns is None else max(start_ns, horizon)
    return old, journal_start, journal_cursor(p.after)


def journal_alone(page: Page, p: Pass) -> bool:
    """Whether the journal answers pass ``p`` alone (no InfluxDB part): the storage's own export may write it."""
    return page.horizon is None or p.lo > 0


def _pass_end(journal, influx, page: Page, node, start_ns, stop_ns, p: Pass, limit: int):
    """``(rows, end)``: ``end`` the position of the ``limit``-th row of ``p`` when more rows of it
    follow (then ``rows`` is ``limit``), else None and ``rows`` how many it has (at most ``limit``)."""
    split = _split(page, p, start_ns, stop_ns)
    if split is None:
        after = journal_cursor(p.after)
        end = journal.page_end(node, start_ns, stop_ns, after=after, limit=limit, ids=p.ids)
        if end is not None:
            return limit, tuple(end)
        return journal.count_readings_in(node, start_ns, stop_ns, after=after, ids=p.ids), None
    old, journal_start, journal_after = split
    count, last = 0, None
    if old is not None:
        for row in _old_rows(journal, influx, node, old, limit + 1, page.arrived):
            count += 1
            if count == limit:
                last = (row[0], row[1])
            elif count > limit:
                return limit, last
    if count == limit:  # the page ends with the last old row: is there a journal row after it?
        more = next(journal.iter_readings(node, journal_start, stop_ns, 1, after=journal_after, limit=1, ids=p.ids), None)
        return (limit, last) if more else (count, None)
    end = journal.page_end(node, journal_start, stop_ns, after=journal_after, limit=limit - count, ids=p.ids)
    if end is not None:
        return limit, tuple(end)
    return count + journal.count_readings_in(node, journal_start, stop_ns, after=journal_after, ids=p.ids), None


# -- the rows of a pass -------------------------------------------------------------------------------


def _padded(row: tuple) -> Row:
    """A row with its telemetry cells (None where the source has none)."""
    return row if len(row) == 8 else (*row[:4], *_ABSENT)


def _in_node_order(rows: Iterable[Row]) -> Iterator[Row]:
    """Rows in time order, re-sorted by node within each instant."""
    for _, same_instant in groupby(rows, key=lambda row: row[0]):
        yield from sorted(same_instant, key=lambda row: row[1])


def _old_rows(journal: Storage, influx: InfluxHistory, node, old, limit, arrived=frozenset()) -> Iterator[Row]:
    """Below the horizon: InfluxDB and what the journal still holds there, each reading once, with
    the telemetry of the journal's copy where it has one. ``arrived``: readings a later pass has."""
    start_ns, stop_ns, after = old
    resumed = None
    if after is not None and isinstance(after[1], int):  # a journal row the journal has pruned since
        resumed, after = after, (after[0], "")  # from its instant on, then _after_journal_row
    influx_limit = None if arrived or resumed is not None else limit
    from_influx = map(_padded, influx.readings(start_ns, stop_ns, node, after, influx_limit, with_extra=True))
    # The readings still in the journal, with their telemetry, then iter_kept_below for the ones
    # InfluxDB refused for good (kept in a table of their own, without telemetry).
    in_journal = _in_node_order(
        row for rows in journal.iter_readings(node, start_ns, stop_ns, with_extra=True) for row in rows
    )
    kept = map(_padded, journal.iter_kept_below(stop_ns, node=node, start_ns=start_ns))
    if after is not None:
        in_journal = (row for row in in_journal if (row[0], row[1]) > after)
        kept = (row for row in kept if (row[0], row[1]) > after)
    merged = heapq.merge(_ranked(in_journal, 0), _ranked(from_influx, 1), _ranked(kept, 2), key=lambda item: item[0])
    rows = _each_once(merged, arrived)
    if resumed is not None:
        rows = _after_journal_row(journal, node, resumed, rows)
    for count, row in enumerate(rows, 1):
        yield row
        if limit is not None and count >= limit:
            return


def _each_once(merged: Iterable[tuple], arrived: frozenset) -> Iterator[Row]:
    """The rows of the merged sources, each reading once (the lower rank's copy), without ``arrived``."""
    previous = None
    for (ts, name, _), row in merged:
        key = (ts, name)
        if key == previous or key in arrived:
            continue  # forwarded after the prune: in InfluxDB and still in the journal
        previous = key
        yield row


def _after_journal_row(journal: Storage, node, position: tuple[int, int], rows: Iterator[Row]) -> Iterator[Row]:
    """``rows`` (the part below the horizon from the instant of ``position`` on, in ``(time, node)``
    order) without the rows a reader had up to ``position``, a ``(time, id)`` of the journal's order
    handed out before the journal pruned past it.

    Of the rows of that instant, one the journal still holds was had when its id is at most the
    position's. The ones it has pruned keep no id, but the service never gives two readings one
    timestamp: when one pruned row is all the instant holds besides those, it is the position's own
    row, and it was had. Only an older journal, with readings of several nodes at one instant, leaves
    it open which of them were had: those come again (a row repeated beats a row lost)."""
    ts, row_id = position
    held = {row[1]: row[4] for rows_ in journal.iter_readings(node, ts, ts + 1, with_id=True) for row in rows_}
    same, later = [], None
    for row in rows:
        if row[0] != ts:
            later = row
            break
        same.append(row)
    pruned = [row for row in same if row[1] not in held]
    had_pruned = row_id not in held.values() and len(pruned) == 1  # the position's own row, pruned since
    for row in same:
        if row[1] in held:
            if held[row[1]] > row_id:
                yield row
        elif not had_pruned:
            yield row
    if later is not None:
        yield later
        yield from rows


def _ranked(rows: Iterable[Row], rank: int) -> Iterator[tuple]:
    """``((ts, node, rank), row)``: of two copies of one reading, the lower rank comes first and stays."""
    for row in rows:
        yield (row[0], row[1], rank), row


def pass_rows(
    journal: Storage, influx: Optional[InfluxHistory], page: Page, p: Pass, *, node: Optional[str] = None,
    start_ns: Optional[int] = None, stop_ns: Optional[int] = None, batch: int = BATCH,
) -> Iterator[list[Row]]:
    """Batches of the rows of pass ``p`` of ``page``, with their telemetry (:data:`Row`)."""
    split = _split(page, p, start_ns, stop_ns)
    if split is None:
        yield from journal.iter_readings(
            node, start_ns, stop_ns, batch, after=journal_cursor(p.after), limit=p.limit, with_extra=True, ids=p.ids
        )
        return
    old, journal_start, journal_after = split
    limit = p.limit
    if old is not None:
        rows = _old_rows(journal, influx, node, old, limit, page.arrived)
        delivered = 0
        while chunk := list(_take(rows, batch)):
            delivered += len(chunk)
            yield chunk
        if limit is not None:
            limit -= delivered
            if limit <= 0:
                return
    yield from journal.iter_readings(
        node, journal_start, stop_ns, batch, after=journal_after, limit=limit, with_extra=True, ids=p.ids
    )


def _take(rows: Iterator, n: int) -> Iterator:
    for _, row in zip(range(n), rows):
        yield row
