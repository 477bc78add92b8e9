"""The one WHERE builder of every range query (outbox, reads, retention), for every engine: the
engines differ only in their parameter mark (SQLite ``?``, psycopg ``%s``) and how they say "true"."""
from __future__ import annotations

from typing import Optional

MIN_NS, MAX_NS = -(2**63), 2**63 - 1  # what nanoseconds since the epoch hold in 64 bits


def where(
    mark: str,
    every: str,
    *,
    after_id: Optional[int] = None,
    up_to_id: Optional[int] = None,
    start_ns: Optional[int] = None,
    stop_ns: Optional[int] = None,
    after: Optional[tuple[int, int]] = None,
    node_id: Optional[int] = None,
    table: str = "readings",
    ts_unindexed: bool = False,
) -> tuple[str, list]:
    """``(clause, params)`` for the rows of ``table`` with ``after_id < id <= up_to_id``,
    ``start_ns <= ts < stop_ns``, strictly after ``after=(ts, id)`` in the order ``(ts, id)``, of
    node ``node_id``: a condition for each bound given, none for None (``every``: the engine's
    "true", for every row). ``mark`` is the engine's parameter placeholder. ``ts_unindexed``: the
    time conditions as ``+ts`` (SQLite then walks another index, the ids of a narrow id window)."""
    clauses, params = [], []
    for value, condition in (
        (after_id, "{t}.id > {m}"), (up_to_id, "{t}.id <= {m}"), (start_ns, "{t}.ts >= {m}"),
        (stop_ns, "{t}.ts < {m}"), (after, "{t}.ts >= {m} AND ({t}.ts > {m} OR {t}.id > {m})"),
        (node_id, "{t}.node_id = {m}"),
    ):
        if value is not None:
            clause = condition.format(t=table, m=mark)
            if ts_unindexed:
                clause = clause.replace(f"{table}.ts", f"+{table}.ts")
            clauses.append(clause)
            params += [value[0], value[0], value[1]] if value is after else [value]
    return " AND ".join(clauses) or every, params
