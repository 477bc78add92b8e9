"""Reads: readings by node and time range, counts, pages, one snapshot; and :func:`where`, the
engine's mark on the one WHERE builder (service/storage/ranges.py) every range query is made with."""
from __future__ import annotations

import sqlite3
from typing import Iterator, Optional

from .. import ranges
from ..interface import EXTRA_FIELDS
from ..ranges import MAX_NS, MIN_NS
from . import export
from .schema import snapshot


ID_WINDOW = 50_000  # ids=(lo, hi) at most this wide: walked by id and sorted (a few MB at most)
EXTRA_SELECT = "".join(f", readings.{column}" for column in EXTRA_FIELDS)  # after humidity, with_extra


def _readings(ids) -> str:
    """The table a range read walks: a later pass (``ids=(lo, hi)`` with ``lo``: the readings that
    arrived since a reader's pass, usually few) walks the ids and sorts them, not the whole readings_ts
    index, which SQLite would pick for the ORDER BY."""
    return "readings NOT INDEXED" if ids is not None and ids[0] is not None else "readings"


def where(**bounds) -> tuple[str, list]:
    """:func:`tswarm.storage.ranges.where` with this engine's parameter mark."""
    return ranges.where("?", "1", **bounds)


class ReadsRoom:
    conn: sqlite3.Connection

    def _time_range(self, node, start_ns, stop_ns, after, ids=None) -> Optional[tuple[str, list]]:
        """The readers' WHERE clause, or None when ``node`` never existed. Both time bounds are always
        given, so SQLite walks readings_ts in order (no sort, constant memory); but for a narrow id
        window (``ids=(lo, hi)``, at most :data:`ID_WINDOW` ids: the readings that arrived since a
        pass) it walks those ids and sorts them, rather than the whole time range."""
        node_id = None
        if node is not None:
            node_id = self._node_id(node)
            if node_id is None:
                return None
        lo, hi = (None, None) if ids is None else ids
        return where(
            start_ns=MIN_NS if start_ns is None else start_ns,
            stop_ns=MAX_NS if stop_ns is None else stop_ns,
            after=after,
            node_id=node_id,
            after_id=lo,
            up_to_id=hi,
            ts_unindexed=lo is not None and hi is not None and hi - lo <= ID_WINDOW,
        )

    def count_readings(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]

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
        # SQLite joins the node names in (an index lookup in C): rows come out ready to use.
        sql = (
            "SELECT readings.ts, COALESCE(nodes.name, '#' || readings.node_id), temperature, humidity"
            + (EXTRA_SELECT if with_extra else "")
            + (", readings.id" if with_id else "")
            + f" FROM {_readings(ids)} LEFT JOIN nodes ON nodes.id = readings.node_id WHERE {clause}"
            " ORDER BY readings.ts, readings.id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        cur = self.conn.execute(sql, params)
        try:
            while rows := cur.fetchmany(batch):
                yield rows
        finally:
            cur.close()

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
        """The export's lines read with four columns a row while the readings come without telemetry
        (service/storage/sqlite/export.py), the rows of :meth:`iter_readings` in its order; the lines
        with the telemetry only (``with_extra``)."""
        if not with_extra or fmt not in export.FORMATS:
            return None
        return self._export_lines(fmt, node, start_ns, stop_ns, after, limit, ids)

    def _export_lines(self, fmt, node, start_ns, stop_ns, after, limit, ids) -> Iterator[tuple[str, int]]:
        query = self._time_range(node, start_ns, stop_ns, after, ids)
        if query is None:
            return
        clause, params = query
        rest = (
            f" FROM {_readings(ids)} LEFT JOIN nodes ON nodes.id = readings.node_id WHERE {clause}"
            " ORDER BY readings.ts, readings.id"
        )
        yield from export.line_chunks(self.conn, fmt, rest, params, limit)

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
        return self.conn.execute(f"SELECT COUNT(*) FROM {_readings(ids)} WHERE {clause}", params).fetchone()[0]

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
        rows = self.conn.execute(
            f"SELECT ts, id FROM {_readings(ids)} WHERE {clause} ORDER BY ts, id LIMIT 2 OFFSET ?", params + [limit - 1]
        ).fetchall()
        return tuple(rows[0]) if len(rows) == 2 else None

    def snapshot(self) -> snapshot:
        return snapshot(self.conn)

    def reading_counts_since(self, since_ns: int) -> dict[str, int]:
        clause, params = where(start_ns=since_ns)
        return dict(self.conn.execute(
            "SELECT nodes.name, COUNT(*) FROM readings JOIN nodes ON nodes.id = readings.node_id"
            f" WHERE {clause} GROUP BY readings.node_id",
            params,
        ))

    def iter_kept_below(
        self, before_ns: int, node: Optional[str] = None, start_ns: Optional[int] = None
    ) -> Iterator[tuple]:
        bounds = {"start_ns": MIN_NS if start_ns is None else start_ns, "stop_ns": before_ns}
        kept, kept_params = where(**bounds)
        rejected, rejected_params = where(**bounds, table="rejected")
        sql = (
            "SELECT ts, node, temperature, humidity FROM ("
            " SELECT ts, nodes.name AS node, temperature, humidity FROM readings"
            f" JOIN nodes ON nodes.id = readings.node_id WHERE {kept}"
            f" UNION SELECT ts, node, temperature, humidity FROM rejected WHERE {rejected})"
        )
        params = kept_params + rejected_params
        if node is not None:
            sql += " WHERE node = ?"
            params.append(node)
        cur = self.conn.execute(sql + " ORDER BY ts, node", params)
        try:
            yield from cur
        finally:
            cur.close()
