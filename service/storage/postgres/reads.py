"""Reads: readings by node and time range, counts, pages, one snapshot; and :func:`where`, the
engine's mark on the one WHERE builder (service/storage/ranges.py) every range query is made with.

Long reads stream through a server-side (named) cursor, ``batch`` rows per round trip: memory stays
flat whatever the range. The rows come in binary (integers and doubles as they are stored, the same
values as their text would give): a quarter faster to read than text (benchmarks/pg_export.py).
"""
from __future__ import annotations

import itertools
from typing import Iterator, Optional

from .. import ranges
from ..interface import EXTRA_FIELDS
from .connection import Connections
from .export import line_chunks, odd_names

_cursor_names = itertools.count(1)
EXTRA_SELECT = "".join(f", readings.{column}" for column in EXTRA_FIELDS)  # after humidity, with_extra


def where(**bounds) -> tuple[str, list]:
    """:func:`tswarm.storage.ranges.where` with this engine's parameter mark."""
    return ranges.where("%s", "TRUE", **bounds)


class ReadsRoom(Connections):
    def _time_range(self, node, start_ns, stop_ns, after, ids=None) -> Optional[tuple[str, list]]:
        """The readers' WHERE clause, or None when ``node`` never existed."""
        node_id = None
        if node is not None:
            node_id = self._node_id(node)
            if node_id is None:
                return None
        lo, hi = (None, None) if ids is None else ids
        return where(start_ns=start_ns, stop_ns=stop_ns, after=after, node_id=node_id, after_id=lo, up_to_id=hi)

    def _stream(self, sql: str, params: list, batch: int) -> Iterator[list[tuple]]:
        """The rows of ``sql``, ``batch`` at a time, through a named cursor (in a transaction of its
        own, or the snapshot's)."""
        with self._transaction() as conn:
            with conn.cursor(name=f"tswarm_read_{next(_cursor_names)}", binary=True) as cur:
                cur.itersize = batch
                cur.execute(sql, params)
                while rows := cur.fetchmany(batch):
                    yield rows

    def export_lines(
        self,
        fmt: str,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: Optional[int] = None,
        with_extra: bool = False,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> Optional[Iterator[tuple[str, int]]]:
        """The export's lines written by the server (service/storage/postgres/export.py); None when a
        node's name breaks the rule, so the generic path writes them, and (until export.py writes
        them) for the lines with the telemetry."""
        if with_extra:
            return None
        chunks = self._copy_export(fmt, node, start_ns, stop_ns, after, limit, ids)
        if not next(chunks):
            chunks.close()
            return None
        return chunks

    def _copy_export(self, fmt, node, start_ns, stop_ns, after, limit, ids=None) -> Iterator:
        """First whether the server can write the lines, then their chunks; the names check and the
        lines in one snapshot (the caller's, or a REPEATABLE READ transaction of their own)."""
        query = self._time_range(node, start_ns, stop_ns, after, ids)
        pinned = self._pinned is not None
        with self._transaction() as conn:  # inside a snapshot: a savepoint of it
            if not pinned:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if odd_names(conn):
                yield False
                return
            yield True
            if query is not None:
                yield from line_chunks(conn, fmt, *query, limit)

    def count_readings(self) -> int:
        return self._one("SELECT COUNT(*) FROM readings")[0]

    def iter_readings(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        batch: int = 5000,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: Optional[int] = None,
        with_id: bool = False,
        with_extra: bool = False,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> Iterator[list[tuple]]:
        query = self._time_range(node, start_ns, stop_ns, after, ids)
        if query is None:
            return
        clause, params = query
        sql = (
            "SELECT readings.ts, COALESCE(nodes.name, '#' || readings.node_id), temperature, humidity"
            + (EXTRA_SELECT if with_extra else "")
            + (", readings.id" if with_id else "")
            + f" FROM readings LEFT JOIN nodes ON nodes.id = readings.node_id WHERE {clause}"
            " ORDER BY readings.ts, readings.id"
        )
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        yield from self._stream(sql, params, batch)

    def count_readings_in(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> int:
        query = self._time_range(node, start_ns, stop_ns, after, ids)
        if query is None:
            return 0
        clause, params = query
        return self._one(f"SELECT COUNT(*) FROM readings WHERE {clause}", params)[0]

    def page_end(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: int,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> Optional[tuple[int, int]]:
        query = self._time_range(node, start_ns, stop_ns, after, ids)
        if query is None:
            return None
        clause, params = query
        rows = self._all(
            f"SELECT ts, id FROM readings WHERE {clause} ORDER BY ts, id LIMIT 2 OFFSET %s", params + [limit - 1]
        )
        return tuple(rows[0]) if len(rows) == 2 else None

    def reading_counts_since(self, since_ns: int) -> dict[str, int]:
        clause, params = where(start_ns=since_ns)
        return dict(self._all(
            "SELECT nodes.name, COUNT(*) FROM readings JOIN nodes ON nodes.id = readings.node_id"
            f" WHERE {clause} GROUP BY nodes.id, nodes.name",
            params,
        ))

    def iter_kept_below(
        self, before_ns: int, node: Optional[str] = None, start_ns: Optional[int] = None
    ) -> Iterator[tuple]:
        bounds = {"start_ns": start_ns, "stop_ns": before_ns}
        kept, kept_params = where(**bounds)
        rejected, rejected_params = where(**bounds, table="rejected")
        sql = (
            "SELECT ts, node, temperature, humidity FROM ("
            " SELECT ts, nodes.name AS node, temperature, humidity FROM readings"
            f" JOIN nodes ON nodes.id = readings.node_id WHERE {kept}"
            f" UNION SELECT ts, node, temperature, humidity FROM rejected WHERE {rejected}) AS kept"
        )
        params = kept_params + rejected_params
        if node is not None:
            sql += " WHERE node = %s"
            params.append(node)
        for rows in self._stream(sql + " ORDER BY ts, node", params, 5000):
            yield from rows
