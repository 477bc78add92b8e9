"""Moving house, whatever the engine: the one query that counts a journal (the source's inside its
dump's snapshot, the copy's inside its load transaction, so ``tswarm migrate`` commits only a copy
that matches), and the column lists of a dump as SQL. The engines' own halves are
``sqlite/dump.py`` and ``postgres/dump.py``."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from .interface import (
    ALERT_COLUMNS, ALERT_STATE_COLUMNS, BUNDLE_COLUMNS, BUNDLE_FILE_COLUMNS, NODE_COLUMNS, READING_COLUMNS,
    REJECTED_COLUMNS, JournalCounts,
)

NODES = ", ".join(NODE_COLUMNS)
BUNDLES = ", ".join(BUNDLE_COLUMNS)
BUNDLE_FILES = ", ".join(BUNDLE_FILE_COLUMNS)
READINGS = ", ".join(READING_COLUMNS)
REJECTED = ", ".join(REJECTED_COLUMNS)
ALERT_STATES = ", ".join(ALERT_STATE_COLUMNS)
ALERTS = ", ".join(ALERT_COLUMNS)

# Plain SQL both engines read alike (``halted`` and ``display`` are integers in SQLite, booleans in
# PostgreSQL: ``WHERE halted`` is true for 1 and for true).
COUNTS = (
    "SELECT (SELECT COUNT(*) FROM nodes), (SELECT COUNT(*) FROM nodes WHERE removed_at IS NULL),"
    " (SELECT COUNT(*) FROM nodes WHERE halted), (SELECT COUNT(*) FROM readings),"
    " (SELECT COALESCE(MIN(id), 0) FROM readings), (SELECT COALESCE(MAX(id), 0) FROM readings),"
    " (SELECT COALESCE(MAX(ts), 0) FROM readings), (SELECT COUNT(*) FROM rejected),"
    " (SELECT COUNT(*) FROM bundles), (SELECT COUNT(*) FROM bundle_files), (SELECT COUNT(*) FROM nodes WHERE display)"
)
META = "SELECT key, value FROM meta ORDER BY key"


def journal_counts(conn: Any) -> JournalCounts:
    """The counts of the journal ``conn`` sees (an sqlite3 or a psycopg connection, in the caller's
    transaction)."""
    *row, bundles, bundle_files, display = (int(n) for n in conn.execute(COUNTS).fetchone())
    meta = tuple((key, value) for key, value in conn.execute(META).fetchall())
    return JournalCounts(*row, meta=tuple(sorted(meta)), bundles=bundles, bundle_files=bundle_files, display=display)


def alert_rows(conn: Any) -> dict[str, list[tuple]]:
    """The alerts' state and outbox as of the caller's transaction on ``conn`` (either engine's: the
    tables and columns are alike), as :class:`JournalDump`'s ``alert_states`` and ``alerts``."""
    return {
        "alert_states": [tuple(r) for r in conn.execute(f"SELECT {ALERT_STATES} FROM alert_states ORDER BY node")],
        "alerts": [tuple(r) for r in conn.execute(f"SELECT {ALERTS} FROM alerts ORDER BY id")],
    }


def differences(copy: JournalCounts, source: JournalCounts) -> str:
    """What differs between a copy's counts and its source's, for the error that refuses the copy
    (``""``: nothing)."""
    parts = [
        f"{f.name} {getattr(copy, f.name)} instead of {getattr(source, f.name)}"
        for f in fields(JournalCounts) if f.name != "meta" and getattr(copy, f.name) != getattr(source, f.name)
    ]
    if copy.meta != source.meta:
        parts.append("the meta values differ")
    return ", ".join(parts)
