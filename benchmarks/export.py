"""Export: N readings as CSV through `tswarm export` and `GET /api/readings`, against the sqlite3
command-line shell's own CSV output of the same rows (the near-limit baseline). Rows/s, the ratio,
and peak RSS of each."""
import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import Variant, register_nodes, rss_mb
from tswarm.storage import DB_FILENAME, open_storage


def fill(data_dir: Path, rows: int, nodes: int = 100) -> None:
    names = register_nodes(data_dir, nodes, scrypt_n=2**10)
    with open_storage(data_dir) as journal:
        base = 1_700_000_000 * 10**9
        step = 200_000  # one transaction each
        for start in range(0, rows, step):
            journal.add_readings(
                (names[i % nodes], base + i * (300 * 10**9 // nodes), round(random.uniform(-40, 80), 1),
                 round(random.uniform(0, 100), 1)) for i in range(start, min(rows, start + step))
            )


class PeakRss:
    """Samples a process's RSS every 50 ms while the ``with`` block runs; ``.mb`` is the peak."""

    def __init__(self, pid: int):
        self.pid, self.mb = pid, 0.0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.mb = max(self.mb, rss_mb(self.pid))
            except OSError:  # the process has ended
                return
            time.sleep(0.05)

    def __enter__(self) -> "PeakRss":
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def drain(stream) -> int:
    size = 0
    while chunk := stream.read(1 << 20):
        size += len(chunk)
    return size


def run_command(cmd: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """(seconds, bytes written to stdout, peak RSS MB) of one command (``env``: its environment)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    with PeakRss(proc.pid) as peak:
        size = drain(proc.stdout)
        proc.wait()
    return time.perf_counter() - started, size, peak.mb


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        t0 = time.perf_counter()
        fill(data_dir, rows)
        print(f"generated {rows} readings in {time.perf_counter() - t0:.0f} s")
        db = str(data_dir / DB_FILENAME)
        query = ("SELECT r.ts, n.name, r.temperature, r.humidity FROM readings r JOIN nodes n ON n.id = r.node_id"
                 " ORDER BY r.ts, r.id")
        base_s, base_bytes, base_rss = run_command(["sqlite3", "-csv", "-header", db, query])
        cli_s, cli_bytes, cli_rss = run_command([sys.executable, "-m", "tswarm", "export", "--data-dir", str(data_dir)])
        with Variant(data_dir) as service:
            idle_rss = service.rss_mb()
            started = time.perf_counter()
            with PeakRss(service.proc.pid) as peak, \
                    urllib.request.urlopen(service.url + "/api/readings?format=csv", timeout=600) as resp:
                api_bytes = drain(resp)
            api_s, api_rss = time.perf_counter() - started, peak.mb
    print(f"sqlite3 -csv      {rows / base_s:10.0f} rows/s  {base_bytes / 1e6:7.0f} MB  peak RSS {base_rss:6.0f} MB")
    print(f"tswarm export     {rows / cli_s:10.0f} rows/s  {cli_bytes / 1e6:7.0f} MB  peak RSS {cli_rss:6.0f} MB"
          f"  ratio to sqlite3 {base_s / cli_s:.2f}")
    print(f"GET /api/readings {rows / api_s:10.0f} rows/s  {api_bytes / 1e6:7.0f} MB  peak RSS {api_rss:6.0f} MB"
          f" (idle {idle_rss:.0f} MB)  ratio to sqlite3 {base_s / api_s:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    main(parser.parse_args().rows)
