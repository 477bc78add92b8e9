"""Moving house (``tswarm migrate``): the whole journal out of this data dir, or into an empty one.

:meth:`DumpRoom.dump` reads every table in one read transaction (WAL: a running writer is not
held up, and the dump sees none of its later commits). :meth:`DumpRoom.load` writes a new journal
file beside the place of ``tswarm.db`` (``.tswarm.db.moving-<pid>``), in one transaction, compares
its counts with the dump's, and only then links it in as ``tswarm.db`` (``link()`` never replaces a
file: a journal that appeared there meanwhile wins, and the copy is refused). Any failure removes the
new file, so the data dir is as it was.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from ..interface import JournalCounts, JournalDump, StorageUnusable
from ..interface import BUNDLE_COLUMNS, BUNDLE_FILE_COLUMNS, NODE_COLUMNS, READING_COLUMNS, REJECTED_COLUMNS
from ..moving import BUNDLE_FILES, BUNDLES, NODES, READINGS, REJECTED, alert_rows, differences, journal_counts
from .schema import DB_FILENAME, check_data_dir, open_connection, snapshot, transaction


def _batches(conn: sqlite3.Connection, sql: str, batch: int) -> Iterator[list[tuple]]:
    cur = conn.execute(sql)
    try:
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


class DumpRoom:
    conn: sqlite3.Connection
    path: Path

    @contextlib.contextmanager
    def dump(self, batch: int = 10_000) -> Iterator[JournalDump]:
        with snapshot(self.conn):
            counts = journal_counts(self.conn)
            nodes = [(*row[:6], bool(row[6]), *row[7:-1], bool(row[-1]))  # halted and display: bools
                     for row in self.conn.execute(f"SELECT {NODES} FROM nodes ORDER BY id")]
            yield JournalDump(
                counts,
                nodes,
                rejected=_batches(self.conn, f"SELECT {REJECTED} FROM rejected ORDER BY reading_id", batch),
                readings=_batches(self.conn, f"SELECT {READINGS} FROM readings ORDER BY id", batch),
                bundles=self.conn.execute(f"SELECT {BUNDLES} FROM bundles ORDER BY version").fetchall(),
                bundle_files=[
                    (*row[:3], bytes(row[3]))
                    for row in self.conn.execute(f"SELECT {BUNDLE_FILES} FROM bundle_files ORDER BY version, name")
                ],
                **alert_rows(self.conn),
            )

    @classmethod
    def load(
        cls, target: Union[str, Path], dump: JournalDump, on_rows: Optional[Callable[[int], None]] = None
    ) -> JournalCounts:
        data_dir = Path(target)
        final = data_dir / DB_FILENAME
        if final.exists():
            raise StorageUnusable(
                f"{final} holds a journal already; tswarm migrate copies only into a data dir without one"
                " (give another, or move that tswarm.db away)"
            )
        made = not data_dir.exists()
        check_data_dir(data_dir)
        moving = data_dir / f".{DB_FILENAME}.moving-{os.getpid()}"
        _remove(moving)  # a leftover of an earlier attempt of this pid
        done = False
        try:
            conn = open_connection(moving)  # the schema of this tswarm
            try:
                with transaction(conn):
                    counts = _copy(conn, dump, on_rows)
                    wrong = differences(counts, dump.counts)
                    if wrong:
                        raise StorageUnusable(f"the copy in {final} does not match its source ({wrong})")
            finally:
                conn.close()  # the last connection: SQLite folds the WAL into the file and removes it
            try:
                os.link(moving, final)
            except FileExistsError:
                raise StorageUnusable(f"{final} appeared while copying (a tswarm serve started there?); nothing copied") from None
            _sync_folder(data_dir)
            done = True
            return counts
        except sqlite3.Error as exc:
            raise StorageUnusable(f"cannot copy into {final}: {exc}") from None
        except OSError as exc:
            raise StorageUnusable(f"cannot copy into {final}: {exc.strerror or exc}") from None
        finally:
            _remove(moving)
            if made and not done:
                with contextlib.suppress(OSError):
                    data_dir.rmdir()  # made by this call, empty again


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _copy(conn: sqlite3.Connection, dump: JournalDump, on_rows: Optional[Callable[[int], None]]) -> JournalCounts:
    """Insert every row of ``dump`` (inside the caller's transaction); the counts of the result."""
    conn.executemany(
        f"INSERT INTO nodes ({NODES}) VALUES ({_marks(len(NODE_COLUMNS))})", ((*n[:6], int(n[6]), *n[7:-1], int(n[-1])) for n in dump.nodes)
    )
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", dump.counts.meta)
    conn.executemany(f"INSERT INTO bundles ({BUNDLES}) VALUES ({_marks(len(BUNDLE_COLUMNS))})", dump.bundles)
    conn.executemany(f"INSERT INTO bundle_files ({BUNDLE_FILES}) VALUES ({_marks(len(BUNDLE_FILE_COLUMNS))})", dump.bundle_files)
    for rows in dump.rejected:
        conn.executemany(f"INSERT INTO rejected ({REJECTED}) VALUES ({_marks(len(REJECTED_COLUMNS))})", rows)
    for rows in dump.readings:
        conn.executemany(f"INSERT INTO readings ({READINGS}) VALUES ({_marks(len(READING_COLUMNS))})", rows)
        if on_rows is not None:
            on_rows(len(rows))
    return journal_counts(conn)


def _sync_folder(folder: Path) -> None:
    """The new name on disk too (a power cut after the link must not lose it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
