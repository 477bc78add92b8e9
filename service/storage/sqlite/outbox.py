"""The outbox (``store=influxdb``): the forward cursor, the readings after it, the readings InfluxDB
refused for good, and the backlog."""
from __future__ import annotations

import sqlite3
import time
from typing import Iterable, Optional

from ..interface import FORWARD_CURSOR, OutboxReading, OutboxRow, outbox_select
from .meta import get_meta, put_meta
from .reads import where
from .schema import transaction


class OutboxRoom:
    conn: sqlite3.Connection

    def forward_cursor(self) -> int:
        return int(get_meta(self.conn, FORWARD_CURSOR) or 0)

    def outbox_rows(
        self, after_id: int, limit: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None,
        *, with_extra: bool = False, lean: bool = False,
    ) -> list[OutboxRow]:
        clause, params = where(after_id=after_id, start_ns=start_ns, stop_ns=stop_ns)
        return outbox_select(lambda columns: self.conn.execute(
            f"SELECT id, node_id, ts, temperature, humidity{columns} FROM readings WHERE {clause} ORDER BY id LIMIT ?",
            params + [limit],
        ).fetchall(), with_extra, lean)

    def count_outbox(self, after_id: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None) -> int:
        clause, params = where(after_id=after_id, start_ns=start_ns, stop_ns=stop_ns)
        return self.conn.execute(f"SELECT COUNT(*) FROM readings WHERE {clause}", params).fetchone()[0]

    def last_reading_id(self) -> int:
        return self.conn.execute("SELECT MAX(id) FROM readings").fetchone()[0] or 0

    def first_id_from(self, start_ns: int) -> int:
        clause, params = where(start_ns=start_ns)
        first = self.conn.execute(f"SELECT MIN(id) FROM readings WHERE {clause}", params).fetchone()[0]
        return first - 1 if first is not None else self.last_reading_id()

    def oldest_unforwarded_ts(self) -> Optional[int]:
        clause, params = where(after_id=self.forward_cursor())
        row = self.conn.execute(f"SELECT ts FROM readings WHERE {clause} ORDER BY id LIMIT 1", params).fetchone()
        return None if row is None else row[0]

    def mark_forwarded(self, last_id: int, rejected: Iterable[tuple[OutboxReading, str]] = ()) -> None:
        with transaction(self.conn):
            self._keep_rejected(rejected)
            put_meta(self.conn, FORWARD_CURSOR, str(last_id), never_backwards=True)

    def record_rejected(self, rejected: Iterable[tuple[OutboxReading, str]]) -> None:
        with transaction(self.conn):
            self._keep_rejected(rejected)

    def _keep_rejected(self, rejected: Iterable[tuple[OutboxReading, str]]) -> None:
        now = time.time_ns()
        self.conn.executemany(
            "INSERT OR REPLACE INTO rejected (reading_id, node, ts, temperature, humidity, reason, rejected_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.id, r.node, r.ts, r.temperature, r.humidity, reason, now) for r, reason in rejected],
        )

    def count_rejected(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]

    def rejected_readings(self, limit: int = 100) -> list[tuple[OutboxReading, str, int]]:
        rows = self.conn.execute(
            "SELECT reading_id, node, ts, temperature, humidity, reason, rejected_at FROM rejected"
            " ORDER BY rejected_at DESC, reading_id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(OutboxReading(*row[:5]), row[5], row[6]) for row in rows]
