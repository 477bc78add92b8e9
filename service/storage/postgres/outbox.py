"""The outbox (``store=influxdb``): the forward cursor, the readings after it, the readings InfluxDB
refused for good, and the backlog."""
from __future__ import annotations

import time
from typing import Iterable, Optional

import psycopg

from ..interface import FORWARD_CURSOR, OutboxReading, OutboxRow, outbox_select
from .connection import Connections
from .meta import get_meta, put_meta
from .reads import where


class OutboxRoom(Connections):
    def forward_cursor(self) -> int:
        with self._connection() as conn:
            return int(get_meta(conn, FORWARD_CURSOR) or 0)

    def outbox_rows(
        self, after_id: int, limit: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None,
        *, with_extra: bool = False, lean: bool = False,
    ) -> list[OutboxRow]:
        clause, params = where(after_id=after_id, start_ns=start_ns, stop_ns=stop_ns)
        return outbox_select(lambda columns: self._all(
            f"SELECT id, node_id, ts, temperature, humidity{columns} FROM readings WHERE {clause} ORDER BY id LIMIT %s",
            params + [limit],
        ), with_extra, lean)

    def count_outbox(self, after_id: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None) -> int:
        clause, params = where(after_id=after_id, start_ns=start_ns, stop_ns=stop_ns)
        return self._one(f"SELECT COUNT(*) FROM readings WHERE {clause}", params)[0]

    def last_reading_id(self) -> int:
        return self._one("SELECT MAX(id) FROM readings")[0] or 0

    def first_id_from(self, start_ns: int) -> int:
        clause, params = where(start_ns=start_ns)
        first = self._one(f"SELECT MIN(id) FROM readings WHERE {clause}", params)[0]
        return first - 1 if first is not None else self.last_reading_id()

    def oldest_unforwarded_ts(self) -> Optional[int]:
        clause, params = where(after_id=self.forward_cursor())
        row = self._one(f"SELECT ts FROM readings WHERE {clause} ORDER BY id LIMIT 1", params)
        return None if row is None else row[0]

    def mark_forwarded(self, last_id: int, rejected: Iterable[tuple[OutboxReading, str]] = ()) -> None:
        with self._transaction() as conn:
            _keep_rejected(conn, rejected)
            put_meta(conn, FORWARD_CURSOR, str(last_id), never_backwards=True)

    def record_rejected(self, rejected: Iterable[tuple[OutboxReading, str]]) -> None:
        with self._transaction() as conn:
            _keep_rejected(conn, rejected)

    def count_rejected(self) -> int:
        return self._one("SELECT COUNT(*) FROM rejected")[0]

    def rejected_readings(self, limit: int = 100) -> list[tuple[OutboxReading, str, int]]:
        rows = self._all(
            "SELECT reading_id, node, ts, temperature, humidity, reason, rejected_at FROM rejected"
            " ORDER BY rejected_at DESC, reading_id DESC LIMIT %s",
            (limit,),
        )
        return [(OutboxReading(*row[:5]), row[5], row[6]) for row in rows]


def _keep_rejected(conn: psycopg.Connection, rejected: Iterable[tuple[OutboxReading, str]]) -> None:
    now = time.time_ns()
    rows = [(r.id, r.node, r.ts, r.temperature, r.humidity, reason, now) for r, reason in rejected]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rejected (reading_id, node, ts, temperature, humidity, reason, rejected_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (reading_id) DO UPDATE SET node = excluded.node,"
                " ts = excluded.ts, temperature = excluded.temperature, humidity = excluded.humidity,"
                " reason = excluded.reason, rejected_at = excluded.rejected_at",
                rows,
            )
