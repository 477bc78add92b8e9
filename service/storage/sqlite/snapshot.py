"""The SQLite engine's snapshot of nodes' records for the event loop (service/storage/snapshot.py).

The journal keeps a counter, ``registry_version`` (schema version 5,
service/storage/sqlite/schema.py), that triggers bump on every row inserted, updated or deleted in
``nodes`` and on every change of the ``halt_all`` row of ``meta``: in the change's own transaction,
so whoever commits a change (this process's admin API or writer, the CLI, another worker, the
sqlite3 shell) has moved the counter by the moment it is committed.

:class:`SqliteSnapshot` holds records read at one value of the counter. Each lookup on the loop
first looks at the header of the journal's WAL index (the ``-shm`` file SQLite keeps beside a WAL
journal, read through a mapping of its first bytes that this process keeps: every commit of any
connection rewrites it). While it is the one seen
when the counter was last read, nobody has committed anything since, and the lookup asks SQLite
nothing. When it moved (a commit: under load the writer's own, every few milliseconds) the lookup
reads the counter, on a connection of the snapshot's own that only reads (``query_only``)
with a busy timeout of 0 (it never waits for a lock): a different value clears every record, so
the very next request after a change's commit reads it. Any error there (SQLITE_BUSY, which WAL
readers see only in rare moments such as a recovery, a journal replaced or damaged, a missing row)
bypasses the snapshot: that lookup is read in a thread as without one, and nothing is kept until
the counter can be read again. A miss is read in a storage thread, the counter and the record in
one read transaction (:meth:`RegistryRoom._node_auth_at`), and kept only if that counter is the
one the snapshot serves, checked again when it is kept: a record read just before a change is
never served after it.

What the check costs, measured on the 2-core machine of benchmarks/ at a load average of 8-12
(Python 3.11, SQLite 3.40, WAL; interleaved rounds): a lookup answered by the snapshot 10-16 us of
wall time on the loop (about 5.5 us of CPU), the check alone 7-13 us; the check right after another
connection committed (SQLite then re-reads the changed pages: under load the writer commits a group
every few milliseconds, so the first lookup after each commit pays it) 30-120 us; the lookup it
replaces, a hop to a storage thread and its query, 108-215 us (about 89 us of CPU). Under wrk
(keep-alive, 20 connections, one node), the service's CPU per request went from 352-399 us to
229-256 us. ``PRAGMA data_version`` (whether another connection committed) is no cheaper a first
step: it starts a read transaction as the ``SELECT`` does (measured the same, 10-15 us; after a
commit 30-65 us), and after any commit the counter must be read anyway; so the check is the one
statement. The WAL index header took that statement off every lookup but the first after a commit:
under wrk (keep-alive, 50 connections, 300 nodes) the check went from 9% of the event loop's samples
(py-spy) to 2%.

The header is read from a mapping, not with ``pread``: a read through a mapping keeps the GIL, and
``os.pread`` lets go of it, as any system call does. On the event loop that hands the GIL to the
journal's writer thread, which wants it back after each SQLite statement, and the loop waits up to the
interpreter's switch interval (5 ms) to have it again: beside a thread that wants the GIL, ``os.pread``
of the header kept 0.08-2% of the calls a second it makes alone, the mapping's slice 40-49% (three
runs of benchmarks/gil.py, which measures it; benchmarks/README.md has the figures; the same effect
as the HMAC of the credential cache's key once had). The mapping and its descriptor are kept for the process's life
(:data:`_WAL_INDEX_MAPS` says why), and the mapping covers only the file's first page, which SQLite's
own mapping of the file covers too: a truncation that could make reading it fail (SIGBUS) would fail
SQLite's own reads first, and none happens while this process holds SQLite's locks on the file.
"""
from __future__ import annotations

import logging
import mmap
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..interface import NodeAuth
from ..snapshot import RegistrySnapshot
from .schema import REGISTRY_VERSION

if TYPE_CHECKING:
    from . import SqliteStorage

log = logging.getLogger("tswarm.storage.snapshot")

WAL_INDEX_HEADER = 48  # bytes of the first copy of the WAL index header (WalIndexHdr)

# Each journal's ``-shm`` file this process has read the header of: a descriptor on it and a read-only
# mapping of its header, by the file's (device, inode), kept until the process ends: neither is ever
# closed. SQLite's locks on the WAL index are POSIX advisory locks, which belong to the process, and
# closing ANY descriptor of the file drops every one of them, those of SQLite's own connections included
# (https://www.sqlite.org/howtocorrupt.html, section 2.2), and a mapping holds a descriptor of its own
# (``mmap`` duplicates it), closed with the mapping. With its locks gone, the next process to open the
# journal (`tswarm status`, say) takes the WAL index for unused and rebuilds it under this process's
# connections: SQLite's own truncated mapping killed `tswarm serve` with SIGBUS
# (tests/storage/test_snapshot.py). One of each per journal, kept for every later snapshot of it:
# `tswarm serve` keeps one.
_WAL_INDEX_FDS: dict[tuple[int, int], int] = {}
_WAL_INDEX_MAPS: dict[tuple[int, int], mmap.mmap] = {}
_WAL_INDEX_LOCK = threading.Lock()


def wal_index_map(path: Path) -> Optional[mmap.mmap]:
    """The kept mapping of the WAL index header of the journal ``path`` (mapped the first time), or
    None when it has none (another journal mode, not there yet, shorter than its header)."""
    shm = f"{path}-shm"
    with _WAL_INDEX_LOCK:
        try:
            st = os.stat(shm)
            key = (st.st_dev, st.st_ino)
            header = _WAL_INDEX_MAPS.get(key)
            if header is None:
                fd = _WAL_INDEX_FDS.get(key)
                if fd is None:
                    fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
                    st = os.fstat(fd)  # the file opened (replaced since the stat: that one)
                    key = (st.st_dev, st.st_ino)
                    # a second descriptor of a file already kept stays open too: closing it would drop the locks
                    fd = _WAL_INDEX_FDS.setdefault(key, fd)
                if os.fstat(fd).st_size < WAL_INDEX_HEADER:  # being rebuilt: no header yet, a later check maps it
                    return None
                header = _WAL_INDEX_MAPS.setdefault(key, mmap.mmap(fd, WAL_INDEX_HEADER, prot=mmap.PROT_READ))
        except (OSError, ValueError):  # ValueError: shorter than the header after all (mmap checks)
            return None
        return header


class SqliteSnapshot(RegistrySnapshot):
    """Records of nodes by name, at one value of the journal's ``registry_version``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._records: dict[str, NodeAuth] = {}
        self._version: Optional[int] = None  # the counter the records were read at; None: serve nothing
        self._conn: Optional[sqlite3.Connection] = None
        self._wal_index: Optional[mmap.mmap] = None  # the journal's -shm header (wal_index_map): anyone committed?
        self._seen = b""  # its header when the counter was last read
        try:
            # The journal exists and is current (the storage that makes this opened it). Used only on the
            # event loop; closed from the thread that closes the pool.
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=0)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA query_only = 1")
            self._conn = conn
        except sqlite3.Error as exc:  # serves nothing: every lookup reads in a thread, as without it
            log.debug("no snapshot of nodes' records for %s: %s", self.path, exc)

    def _check(self) -> Optional[int]:
        """The counter now (clearing the records when it moved), or None: bypass. Asked of SQLite only
        when the WAL index's header moved since it was last asked (:meth:`_header`)."""
        conn = self._conn
        if conn is None:
            return None
        header = self._header()
        if header is not None and header == self._seen and self._version is not None:
            return self._version  # nobody committed anything since the counter was read
        try:
            row = conn.execute(REGISTRY_VERSION).fetchone()
        except sqlite3.Error:  # busy, closed, damaged: read in a thread; keep nothing until it answers again
            row = None
        version = None if row is None else row[0]
        if version != self._version or version is None:
            self._records.clear()
            self._version = version
        # the header read BEFORE the counter: a commit after that read moves it, so the next check asks again
        self._seen = header if version is not None and header is not None else b""
        if self._wal_index is None and version is not None:
            self._open_wal_index()
        return version

    def _header(self) -> Optional[bytes]:
        """The WAL index's header now (None: not read). SQLite's WAL index (the journal's ``-shm``
        file, https://www.sqlite.org/walformat.html) begins with the header every connection reads
        to begin a read transaction; every commit of every connection rewrites it (``iChange`` counts
        the transactions, ``mxFrame`` the last frame, a restarted WAL has new salts). An unchanged
        header therefore means no commit since; a torn read (a writer rewriting it this moment) only
        ever differs, so the counter is read. Through the mapping: no system call, the GIL kept (see
        the module's docstring). A file rebuilt since it was mapped reads as it is now (zeros past
        its end in the header's page): a header that differs, so the counter is read."""
        header = self._wal_index
        return None if header is None else header[:WAL_INDEX_HEADER]

    def _open_wal_index(self) -> None:
        """The WAL index, which exists while this snapshot's connection keeps the journal open in WAL
        mode; without it (another journal mode, an error) every check asks SQLite."""
        self._wal_index = wal_index_map(self.path)

    def current(self, name: str) -> Optional[NodeAuth]:
        if self._check() is None:
            return None
        return self._records.get(name)

    def read(self, storage: SqliteStorage, name: str, fresh: bool = False) -> tuple[Optional[int], Optional[NodeAuth]]:
        return storage._node_auth_at(name)

    def keep(self, name: str, token: Optional[int], record: Optional[NodeAuth]) -> None:
        if record is not None and token is not None and self._check() == token:
            self._records[name] = record

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._wal_index = None  # the mapping stays (_WAL_INDEX_MAPS)
        self._records.clear()
        if conn is not None:
            conn.close()
