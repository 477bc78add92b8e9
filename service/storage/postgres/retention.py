"""Retention: pruning old readings, and the horizon below which the journal is incomplete."""
from __future__ import annotations

from typing import Optional

from ..interface import PRUNED_BEFORE
from .connection import Connections
from .meta import get_meta, put_meta
from .reads import where


class RetentionRoom(Connections):
    def prune_readings(self, before_ns: int, up_to_id: Optional[int] = None, chunk: int = 10_000) -> int:
        clause, params = where(stop_ns=before_ns, up_to_id=up_to_id)
        oldest = f"FROM readings WHERE {clause} ORDER BY ts LIMIT %s"  # the next chunk
        total = 0
        while True:
            with self._transaction() as conn:
                # DELETE ... RETURNING gives the newest ts deleted: the horizon, in the same transaction
                newest, deleted = conn.execute(
                    f"WITH gone AS (DELETE FROM readings WHERE id IN (SELECT id {oldest}) RETURNING ts)"
                    " SELECT MAX(ts), COUNT(*) FROM gone",
                    params + [chunk],
                ).fetchone()
                if newest is not None:
                    put_meta(conn, PRUNED_BEFORE, str(newest + 1), never_backwards=True)
            total += deleted
            if deleted < chunk:
                return total

    def pruned_before(self) -> Optional[int]:
        with self._connection() as conn:
            value = get_meta(conn, PRUNED_BEFORE)
        return None if value is None else int(value)
