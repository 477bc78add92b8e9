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

Cursors (see :mod:`tswarm.export`): a row of the journal part is named by ``(time, id)``; a row
of the InfluxDB part has no id and is named by ``(time, node)``, which is unique because no two
readings of a node share a timestamp. Blocking code, meant for a thread (the CLI, or the
readers' export thread); no aiohttp here.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Iterator, Optional, Union

from .storage import Storage
from .settings import Config

if TYPE_CHECKING:
    from .influx.query import InfluxHistory, Row

BATCH = 5000  # rows per batch handed to the export

Cursor = Union[tuple[int, int], tuple[int, str]]  # (ts, journal id) or (ts, node)


class HistoryUnavailable(Exception):
    """InfluxDB could not give the readings of a range the journal no longer holds."""


def open_history(config: Config) -> Optional[InfluxHistory]:
    """The InfluxDB that holds what the journal pruned (``TSWARM_INFLUX_*``); None with ``store=sqlite``.

    Use it as a context manager: ``with open_history(config) or contextlib.nullcontext() as influx``.
    Only here, with ``store=influxdb``, is :mod:`tswarm.influx` imported.
    """
    if config.store != "influxdb":
        return None
    from .influx import endpoint

    return endpoint(config).open_history()


# -- the two parts of an export -------------------------------------------------------------------


def journal_cursor(after: Optional[Cursor]) -> Optional[tuple[int, int]]:
    """A cursor for the journal's ``(time, id)`` order. A ``(time, node)`` cursor resumes at its
    instant (rows of that one instant may come again; never one is skipped)."""
    if after is None or isinstance(after[1], int):
        return after
    return after[0], 0


def _plan(journal: Storage, influx: Optional[InfluxHistory], start_ns, stop_ns, after):
    """``(old, journal_start, journal_after)``: ``old`` is ``(start, stop, after)`` of the part below
    the horizon, or None when the export does not reach below it."""
    horizon = journal.pruned_before() if influx is not None else None
    if horizon is None:
        return None, start_ns, journal_cursor(after)
    old_start = start_ns
    old_stop = horizon if stop_ns is None else min(stop_ns, horizon)
    old_after = None
    if after is not None:
        # A (time, id) cursor below the horizon was handed out before the journal pruned past it:
        # resume at its instant.
        old_after = after if isinstance(after[1], str) else (after[0], "")
    lowest = old_after[0] if old_after is not None else old_start
    old = (old_start, old_stop, old_after) if lowest is None or lowest < old_stop else None
    journal_start = horizon if start_ns is None else max(start_ns, horizon)
    return old, journal_start, journal_cursor(after)


def _old_rows(journal: Storage, influx: InfluxHistory, node, old, limit) -> Iterator[Row]:
    """Below the horizon: InfluxDB and what the journal still holds there, each reading once."""
    start_ns, stop_ns, after = old
    from_influx = influx.readings(start_ns, stop_ns, node, after, limit)
    left_in_journal = journal.iter_kept_below(stop_ns, node=node, start_ns=start_ns)
    if after is not None:
        left_in_journal = (row for row in left_in_journal if (row[0], row[1]) > after)
    previous = None
    count = 0
    for row in heapq.merge(from_influx, left_in_journal, key=lambda row: (row[0], row[1])):
        key = (row[0], row[1])
        if key == previous:
            continue  # forwarded after the prune: in InfluxDB and still in the journal
        previous = key
        yield row
        count += 1
        if limit is not None and count >= limit:
            return


def readings(
    journal: Storage, influx: Optional[InfluxHistory], *, node: Optional[str] = None,
    start_ns: Optional[int] = None, stop_ns: Optional[int] = None, after: Optional[Cursor] = None,
    limit: Optional[int] = None, batch: int = BATCH,
) -> Iterator[list[Row]]:
    """Batches of rows as :meth:`Storage.iter_readings` yields them, over the whole history."""
    old, journal_start, journal_after = _plan(journal, influx, start_ns, stop_ns, after)
    if old is not None:
        rows = _old_rows(journal, influx, node, old, limit)
        delivered = 0
        while chunk := list(_take(rows, batch)):
            delivered += len(chunk)
            yield chunk
        if limit is not None:
            limit -= delivered
            if limit <= 0:
                return
    yield from journal.iter_readings(node, journal_start, stop_ns, batch, after=journal_after, limit=limit)


def page_end(
    journal: Storage, influx: Optional[InfluxHistory], *, node: Optional[str] = None,
    start_ns: Optional[int] = None, stop_ns: Optional[int] = None, after: Optional[Cursor] = None, limit: int,
) -> Optional[Cursor]:
    """The cursor of a page's last row when more rows follow it, else None (see :meth:`Storage.page_end`)."""
    old, journal_start, journal_after = _plan(journal, influx, start_ns, stop_ns, after)
    count, last = 0, None
    if old is not None:
        for ts, name, _, _ in _old_rows(journal, influx, node, old, limit + 1):
            count += 1
            if count == limit:
                last = (ts, name)
            elif count > limit:
                return last
    if count == limit:  # the page ends with the last old row: is there a journal row after it?
        more = next(journal.iter_readings(node, journal_start, stop_ns, 1, after=journal_after, limit=1), None)
        return last if more else None
    return journal.page_end(node, journal_start, stop_ns, after=journal_after, limit=limit - count)


def _take(rows: Iterator, n: int) -> Iterator:
    for _, row in zip(range(n), rows):
        yield row
