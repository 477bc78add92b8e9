"""One data dir, one service: the lock ``tswarm serve`` holds on its data dir for its whole life.

``tswarm.lock`` in the data dir is ``flock``-ed (exclusive) by the running service, which writes its
PID and port into it; the kernel drops the lock when the service dies, however it dies. A second
``serve`` is refused; the other commands (node add, export, ...) work beside it, and read from the
lock which port the running service listens on, so the URL they give a node is the one it serves.

With SQLite this lock is also what makes the service's forwarder and pruner the only ones on the
journal (service/storage/sqlite/lock.py). With PostgreSQL the journal is not in the data dir: each
instance holds its own data dir, and the database's advisory lock picks who forwards
(service/storage/postgres/lock.py).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from .storage import DB_FILENAME, StorageUnusable, check_data_dir

LOCK_FILENAME = "tswarm.lock"


def check_journal_files(data_dir: Path) -> None:
    """:class:`StorageUnusable` when the journal's files in ``data_dir`` (``tswarm.db`` and its ``-wal``
    and ``-shm``) are there but this user may not read and write them: SQLite would open a read-only
    journal without a word and fail at its first write, after the command had done half its work."""
    for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
        path = Path(data_dir) / name
        if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
            raise StorageUnusable(
                f"journal file {path} cannot be read and written by this user (mode {path.stat().st_mode & 0o777:o},"
                f" owner uid {path.stat().st_uid}); run tswarm as the user that owns it, or chown it to this one"
            )


class DataDirInUse(Exception):
    """Another ``tswarm serve`` holds the data dir; nothing was started."""


@contextlib.contextmanager
def hold_data_dir(data_dir: Path, port: Optional[int] = None) -> Iterator[Callable[[Optional[int]], None]]:
    """Hold the data dir's lock (``flock`` LOCK_EX|LOCK_NB) while the block runs, with this process's
    PID (and ``port``, when known) in the file; :class:`DataDirInUse`, naming the holder's PID, when
    another process holds it.

    Processes forked inside the block share the lock; the kernel drops it when the last of them exits.
    The file is left in place: removing it would let a third process lock a new file beside a held one."""
    path = check_data_dir(data_dir) / LOCK_FILENAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (os.pread(fd, 64, 0).decode("ascii", "replace").split() or ["unknown"])[0]
            raise DataDirInUse(
                f"data dir {data_dir} is in use by another tswarm serve (pid {holder}): one service per data dir;"
                " stop that one first, or give this one its own --data-dir"
            ) from None
        def say(port: Optional[int]) -> None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (f"{os.getpid()} {port}\n" if port else f"{os.getpid()}\n").encode(), 0)

        say(port)
        yield say  # the port once it is known (``--port 0``: the kernel's choice)
    finally:
        os.close(fd)


def serving_port(data_dir: Path) -> Optional[int]:
    """The port of the ``tswarm serve`` that holds ``data_dir`` now, or None (none runs, or it did not
    say). Reads only: a lock that nobody holds is tested and let go at once."""
    try:
        fd = os.open(Path(data_dir) / LOCK_FILENAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a service runs; its port is in the file
            fields = os.pread(fd, 64, 0).decode("ascii", "replace").split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() and 0 < int(fields[1]) < 65536 else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
