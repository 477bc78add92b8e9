"""A throwaway PostgreSQL cluster for the benchmarks: the class the tests start (tests/servers.py),
but with ``fsync`` on, since what durability costs is what is measured here."""
from __future__ import annotations

import os

from common import ROOT  # noqa: F401 (puts the checkout on sys.path)

from tests.servers import PostgreSQL


class DurablePostgreSQL(PostgreSQL):
    """``initdb`` into a temporary folder, ``pg_ctl`` on a free loopback port, as the tests do, with
    ``fsync``, ``full_page_writes`` and ``synchronous_commit`` at PostgreSQL's own defaults (on)."""

    def start(self) -> "DurablePostgreSQL":
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                   " -c max_connections=200")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60", "-o", options, "start")
        self.running = True
        return self

    def __enter__(self) -> "DurablePostgreSQL":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    def setting(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            return conn.execute(f"SHOW {name}").fetchone()[0]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the postmaster and every backend it started have used so far
        (backends that ended are counted in the postmaster's children times)."""
        from pathlib import Path

        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == postmaster:
                total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
            elif ppid == postmaster:
                total += (int(fields[11]) + int(fields[12])) / tick
        return total
