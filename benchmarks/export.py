"""Export: N readings as CSV through `tswarm export` and `GET /api/readings`, against the sqlite3
command-line shell's own CSV output of the same rows (the near-limit baseline). Rows/s, the ratio,
and peak RSS of each."""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import ROOT, Variant, register_nodes, rss_mb
from service.journal import DB_FILENAME, Journal


def fill(data_dir: Path, rows: int, nodes: int = 100) -> None:
    names = register_nodes(data_dir, nodes, scrypt_n=2**10)
    with Journal.open(data_dir) as journal:
        ids = [journal.node_auth(n).id for n in names]
        base = 1_700_000_000 * 10**9
        journal.conn.execute("PRAGMA synchronous = OFF")
        step = 200_000
        for start in range(0, rows, step):
            journal.conn.execute("BEGIN")
            journal.conn.executemany(
                "INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)",
                ((ids[i % nodes], base + i * 3_000_000_000 // nodes * 1 + i, round(random.uniform(-40, 80), 1),
                  round(random.uniform(0, 100), 1)) for i in range(start, min(rows, start + step))),
            )
            journal.conn.execute("COMMIT")


def timed(cmd_or_fn, pid_of=None) -> tuple[float, int, float]:
    """Run a command writing to a counter; returns (seconds, bytes, peak RSS MB)."""
    peak = [0.0]
    started = time.perf_counter()
    if callable(cmd_or_fn):
        size, pid = cmd_or_fn(peak)
        return time.perf_counter() - started, size, peak[0]
    proc = subprocess.Popen(cmd_or_fn, stdout=subprocess.PIPE)
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_mb(proc.pid))
            except OSError:
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    size = 0
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
    proc.wait()
    stop.set()
    return time.perf_counter() - started, size, peak[0]


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        t0 = time.perf_counter()
        fill(data_dir, rows)
        print(f"generated {rows} readings in {time.perf_counter() - t0:.0f} s")
        db = str(data_dir / DB_FILENAME)
        query = ("SELECT r.ts, n.name, r.temperature, r.humidity FROM readings r JOIN nodes n ON n.id = r.node_id"
                 " ORDER BY r.ts, r.id")
        base_s, base_bytes, base_rss = timed(["sqlite3", "-csv", "-header", db, query])
        env = {**os.environ, "TSWARM_DATA_DIR": str(data_dir)}
        cli_s, cli_bytes, cli_rss = timed([sys.executable, "-m", "service", "export", "--data-dir", str(data_dir)])
        with Variant(data_dir) as service:
            def api(peak):
                stop = threading.Event()

                def watch():
                    while not stop.is_set():
                        peak[0] = max(peak[0], service.rss_mb())
                        time.sleep(0.05)

                threading.Thread(target=watch, daemon=True).start()
                size = 0
                with urllib.request.urlopen(service.url + "/api/readings?format=csv", timeout=600) as resp:
                    while chunk := resp.read(1 << 20):
                        size += len(chunk)
                stop.set()
                return size, service.proc.pid

            idle_rss = service.rss_mb()
            api_s, api_bytes, api_rss = timed(api)
        del env
    print(f"sqlite3 -csv      {rows / base_s:10.0f} rows/s  {base_bytes / 1e6:7.0f} MB  peak RSS {base_rss:6.0f} MB")
    print(f"tswarm export     {rows / cli_s:10.0f} rows/s  {cli_bytes / 1e6:7.0f} MB  peak RSS {cli_rss:6.0f} MB"
          f"  ratio to sqlite3 {base_s / cli_s:.2f}")
    print(f"GET /api/readings {rows / api_s:10.0f} rows/s  {api_bytes / 1e6:7.0f} MB  peak RSS {api_rss:6.0f} MB"
          f" (idle {idle_rss:.0f} MB)  ratio to sqlite3 {base_s / api_s:.2f}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    main(parser.parse_args().rows)
