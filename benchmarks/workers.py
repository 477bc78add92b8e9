"""Workers: the shipped service as 1, 2 and 3 processes sharing the port (`tswarm serve --workers N`).

Accepted readings/s, p50/p99 latency and the ratio to one worker (the curve), with a new connection
per request (as nodes do) and with keep-alive clients. The load generator runs on the same machine:
on a machine with few cores, workers and load generator compete for them (read the CPU column).

It also times what `--workers` added to every group commit: reading the newest timestamp
(SELECT MAX(ts)) under the write lock, on a journal of a million readings.
"""
import argparse
import tempfile
import time
from pathlib import Path

from common import Variant, load, register_nodes

from tswarm.storage import open_storage


def max_ts_cost(readings: int = 1_000_000, repeat: int = 20_000) -> float:
    """Microseconds per SELECT MAX(ts) on a journal of ``readings`` readings (index readings_ts)."""
    with tempfile.TemporaryDirectory() as tmp, open_storage(tmp) as journal:
        conn = journal.conn
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, 20.5, 50.5)",
                         ((i % 1000, 1_700_000_000_000_000_000 + i) for i in range(readings)))
        conn.execute("COMMIT")
        started = time.perf_counter()
        for _ in range(repeat):
            conn.execute("SELECT MAX(ts) FROM readings").fetchone()
        return (time.perf_counter() - started) / repeat * 1e6


def run(counts: list[int], nodes: int, concurrency: int, seconds: float, procs: int) -> dict:
    results = {}
    for keepalive in (False, True):
        for workers in counts:
            with tempfile.TemporaryDirectory() as tmp:
                data_dir = Path(tmp) / "data"
                names = register_nodes(data_dir, nodes, scrypt_n=2**10)
                with Variant(data_dir, workers=workers) as service:
                    # every node a few times per worker, so each worker's credential cache has seen (nearly) every node
                    load(service.url, names, concurrency=concurrency, seconds=0, keepalive=keepalive, procs=procs, rounds=4 * workers)
                    cpu_before, wall_before = service.cpu_seconds(), time.monotonic()
                    figures = load(service.url, names, concurrency=concurrency, seconds=seconds, keepalive=keepalive, procs=procs)
                    figures["service_cores"] = (service.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
            results[(workers, keepalive)] = figures
            base = results[(counts[0], keepalive)]["readings_per_s"]
            print(f"{workers} worker{'s' if workers > 1 else ' '} {'keep-alive' if keepalive else 'new conn.':10}"
                  f" {figures['readings_per_s']:8.0f} readings/s  x{figures['readings_per_s'] / base:4.2f}"
                  f"  p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms"
                  f"  service CPU {figures['service_cores']:4.2f} cores  statuses {figures['statuses']}", flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts (the first is the base)")
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    args = parser.parse_args()
    print(f"SELECT MAX(ts) under the write lock: {max_ts_cost():.1f} µs per group commit (1,000,000 readings)", flush=True)
    run(args.workers, args.nodes, args.concurrency, args.seconds, args.procs)
