"""Retention: pruning old readings, and the horizon below which the journal is incomplete."""
from __future__ import annotations

import sqlite3
from typing import Optional

from ..interface import PRUNED_BEFORE
from .meta import get_meta, put_meta
from .reads import where
from .schema import transaction


class RetentionRoom:
    conn: sqlite3.Connection

    def prune_readings(self, before_ns: int, up_to_id: Optional[int] = None, chunk: int = 10_000) -> int:
        clause, params = where(stop_ns=before_ns, up_to_id=up_to_id)
        oldest = f"FROM readings WHERE {clause} ORDER BY ts LIMIT ?"  # the next chunk
        total = 0
        while True:
            with transaction(self.conn):
                newest = self.conn.execute(f"SELECT MAX(ts) FROM (SELECT ts {oldest})", params + [chunk]).fetchone()[0]
                cur = self.conn.execute(f"DELETE FROM readings WHERE id IN (SELECT id {oldest})", params + [chunk])
                if newest is not None:  # the horizon, in the same transaction as the deletion
                    put_meta(self.conn, PRUNED_BEFORE, str(newest + 1), never_backwards=True)
            total += cur.rowcount
            if cur.rowcount < chunk:
                return total

    def pruned_before(self) -> Optional[int]:
        value = get_meta(self.conn, PRUNED_BEFORE)
        return None if value is None else int(value)
