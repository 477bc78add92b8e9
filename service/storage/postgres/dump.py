"""Moving house (``tswarm migrate``): the whole journal out of this database, or into an empty one.

:meth:`DumpRoom.dump` reads every table in one REPEATABLE READ snapshot, readings through a named
cursor ``batch`` rows at a time. :meth:`DumpRoom.load` does everything in one transaction on one
connection: it takes :data:`~.schema.MIGRATION_LOCK` (an instance starting meanwhile waits, then finds
the journal made), refuses a database that holds any table of a tswarm journal, creates the schema,
streams every table in with ``COPY ... FROM STDIN (FORMAT BINARY)`` (the alerts' state and outbox
too, when the dump carries them: :func:`alert_rows`), moves the node and alert id sequences past the
copied ids, compares the counts with the dump's, and only then commits. A failure anywhere (a
row PostgreSQL refuses, the connection lost, the counts differing) rolls all of it back, schema
included: the database is as empty as it was.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import psycopg

from ..interface import JournalCounts, JournalDump, StorageUnusable
from ..moving import (
    ALERT_STATES, ALERTS, BUNDLE_FILES, BUNDLES, NODES, READINGS, REJECTED, alert_rows, differences, journal_counts,
)
from .connection import FAILURES, Connections, connect, redact, scrub, unavailable
from .schema import MIGRATION_LOCK, upgrade

# Every table a tswarm journal has here (service/storage/postgres/schema.py): any of them is a journal.
# The alerts' two count too: left behind after the others were dropped, they would make the schema's
# CREATE TABLE fail, and their rows (another journal's alerts) would end up in the copy.
JOURNAL_TABLES = ("alert_states", "alerts", "bundle_files", "bundles", "meta", "nodes", "readings", "rejected",
                  "schema_version")

ALERT_STATE_TYPES = ("text", "text", "text", "int8")
ALERT_TYPES = ("int8", "text", "text", "text", "int8", "int4", "text", "int8")

NODE_TYPES = ("int8", "text", "text", "int8", "int8", "int8", "bool", "int4",
              "text", "int8", "text", "int8", "int8", "text", "int8",  # the fw_* columns
              "bool")  # display
BUNDLE_TYPES = ("text", "int8")
BUNDLE_FILE_TYPES = ("text", "text", "text", "bytea")
READING_TYPES = ("int8", "int8", "int8", "float8", "float8", "float8", "int4", "int4", "int4", "text", "int4")
REJECTED_TYPES = ("int8", "text", "int8", "float8", "float8", "text", "int8")


class DumpRoom(Connections):
    @contextlib.contextmanager
    def dump(self, batch: int = 10_000) -> Iterator[JournalDump]:
        with self.snapshot(), self._connection() as conn:
            counts = journal_counts(conn)
            nodes = conn.execute(f"SELECT {NODES} FROM nodes ORDER BY id").fetchall()
            yield JournalDump(
                counts,
                nodes,
                rejected=self._stream(f"SELECT {REJECTED} FROM rejected ORDER BY reading_id", [], batch),
                readings=self._stream(f"SELECT {READINGS} FROM readings ORDER BY id", [], batch),
                bundles=conn.execute(f"SELECT {BUNDLES} FROM bundles ORDER BY version").fetchall(),
                bundle_files=conn.execute(f"SELECT {BUNDLE_FILES} FROM bundle_files ORDER BY version, name").fetchall(),
                **alert_rows(conn),
            )

    @classmethod
    def load(
        cls, target: Union[str, Path], dump: JournalDump, on_rows: Optional[Callable[[int], None]] = None
    ) -> JournalCounts:
        url = str(target)
        where = redact(url)
        conn = connect(url)  # StorageUnavailable (its message scrubbed) when the server cannot be reached
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                found = [row[0] for row in conn.execute(
                    "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()"
                    " AND tablename = ANY(%s) ORDER BY tablename", (list(JOURNAL_TABLES),),
                )]
                if found:
                    raise StorageUnusable(
                        f"{where} holds a tswarm journal already (tables {', '.join(found)}); tswarm migrate"
                        " copies only into an empty database (give another, or drop those tables; if an"
                        " earlier tswarm migrate printed 'copied ... and checked it', the move is done)"
                    )
                upgrade(conn, where)
                _copy(conn, "nodes", NODES, NODE_TYPES, [dump.nodes])
                _copy(conn, "meta", "key, value", ("text", "text"), [list(dump.counts.meta)])
                _copy(conn, "bundles", BUNDLES, BUNDLE_TYPES, [dump.bundles])
                _copy(conn, "bundle_files", BUNDLE_FILES, BUNDLE_FILE_TYPES, [dump.bundle_files])
                _copy(conn, "rejected", REJECTED, REJECTED_TYPES, dump.rejected)
                _copy(conn, "readings", READINGS, READING_TYPES, dump.readings, on_rows)
                states, alerts = list(dump.alert_states), list(dump.alerts)
                _copy(conn, "alert_states", ALERT_STATES, ALERT_STATE_TYPES, [states])
                _copy(conn, "alerts", ALERTS, ALERT_TYPES, [alerts])
                # nodes.id and alerts.id are identities: the next `node add` and the next alert take
                # the id after the copied ones
                for table in ("nodes", "alerts"):
                    conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL)"
                        f" FROM {table}"
                    )
                counts = journal_counts(conn)
                wrong = differences(counts, dump.counts)
                copied = conn.execute("SELECT (SELECT COUNT(*) FROM alert_states), (SELECT COUNT(*) FROM alerts)").fetchone()
                if not wrong and tuple(copied) != (len(states), len(alerts)):
                    wrong = f"alert states and alerts {copied[0]} and {copied[1]} instead of {len(states)} and {len(alerts)}"
                if wrong:
                    raise StorageUnusable(f"the copy in {where} does not match its source ({wrong})")
        except FAILURES as exc:
            raise unavailable(exc, url) from None
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageUnusable(scrub(f"cannot copy into {where}: {reason}", url)) from None
        finally:
            conn.close()
        return counts


def _copy(
    conn: psycopg.Connection, table: str, columns: str, types: tuple[str, ...], batches: Iterable[list[tuple]],
    on_rows: Optional[Callable[[int], None]] = None,
) -> None:
    """Stream ``batches`` of rows into ``table`` with one binary COPY."""
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for rows in batches:
            for row in rows:
                copy.write_row(row)
            if on_rows is not None:
                on_rows(len(rows))
