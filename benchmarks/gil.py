"""The GIL and the event loop: what a call costs when another thread of the process wants the GIL.

The service's event loop shares its process with the journal's writer thread, which wants the GIL
back after every SQLite statement. A call on the loop that lets go of the GIL (most C functions
that may take a while do) then hands it to that thread, and the loop waits for it to come back:
CPython gives it back only at the holder's next release or after the switch interval (5 ms). This
script shows it on the call that mattered (issue 16, benchmarks/README.md "This stop's steps"): the
credential cache's key, once HMAC-SHA256 through OpenSSL (which lets go of the GIL), now keyed
BLAKE2b (which keeps it for short inputs); and the registry snapshot's check of the journal's WAL index
header (service/storage/sqlite/snapshot.py), read with ``os.pread`` (a system call, which lets go of it)
for a while, now from a mapping of the header (which keeps it).

Each round runs, one after the other, every call for ``--seconds`` alone and then beside a thread
that only wants the GIL (a Python loop counting), and prints calls/s and the ratio of the two. Not
pass/fail: exit 0.

    ../.venv/bin/python gil.py [--rounds 3] [--seconds 1]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import mmap
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

KEY = secrets.token_bytes(32)
HEADER = b"Basic bm9kZTAwMDAxOmJlbmNobWFyay1wYXNzd29yZC0xMjM0NTY3OA=="  # a node's Authorization value

WAL_INDEX_HEADER = 48  # bytes the snapshot reads (service/storage/sqlite/snapshot.py)
_KEPT: list = []  # the journal's connection, open while the script runs (as the service keeps its own)


def wal_index(folder: str) -> int:
    """A descriptor on the WAL index (``-shm``) of a journal in WAL mode made in ``folder``, kept open
    with its connection (as the service keeps both)."""
    path = os.path.join(folder, "journal.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    _KEPT.append(conn)
    return os.open(path + "-shm", os.O_RDONLY)


_FOLDER = tempfile.TemporaryDirectory()
_SHM = wal_index(_FOLDER.name)
_HEADER_MAP = mmap.mmap(_SHM, WAL_INDEX_HEADER, prot=mmap.PROT_READ)

CALLS = {
    "hmac.digest (OpenSSL HMAC-SHA256)": lambda: hmac.digest(KEY, HEADER, "sha256"),
    "hashlib.blake2b(key=...) (the cache's key now)": lambda: hashlib.blake2b(HEADER, key=KEY, digest_size=32).digest(),
    "os.pread of the WAL index header (before)": lambda: os.pread(_SHM, WAL_INDEX_HEADER, 0),
    "the header from its mapping (the snapshot now)": lambda: _HEADER_MAP[:WAL_INDEX_HEADER],
}


def rate(call, seconds: float) -> float:
    """Calls a second of ``call`` over ``seconds`` of wall time."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            call()
        done += 100
    return done / elapsed


def beside_a_thread(call, seconds: float) -> float:
    """:func:`rate` while another thread of this process wants the GIL all the time."""
    stop = threading.Event()

    def wants_the_gil() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    thread = threading.Thread(target=wants_the_gil, daemon=True)
    thread.start()
    try:
        return rate(call, seconds)
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per measurement (default 1)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    print(f"Python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1000:g} ms;"
          f" load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CALLS}
    for round_ in range(1, args.rounds + 1):
        for name, call in CALLS.items():
            alone, beside = rate(call, args.seconds), beside_a_thread(call, args.seconds)
            results[name].append((alone, beside))
            print(f"round {round_}  {name:48} alone {alone:12,.0f}/s  beside a thread {beside:12,.0f}/s"
                  f"  ratio {beside / alone:.4f}")
    print(f"\nover {args.rounds} round(s), median (min–max) of calls/s beside a thread that wants the GIL, and its ratio to alone")
    for name, runs in results.items():
        beside = [b for _, b in runs]
        ratios = [b / a for a, b in runs]
        print(f"{name:48} {statistics.median(beside):12,.0f}/s ({min(beside):,.0f}–{max(beside):,.0f})"
              f"  ratio {statistics.median(ratios):.4f} ({min(ratios):.4f}–{max(ratios):.4f})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
