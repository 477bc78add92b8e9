"""Export from PostgreSQL: N readings as CSV through `tswarm export` and `GET /api/readings` with the
journal in PostgreSQL, against `psql -c "\\copy (SELECT ...) TO STDOUT CSV"` of the same rows (the
server's own CSV writer: the near-limit baseline). A throwaway cluster on loopback with fsync on
(benchmarks/pg.py). Several interleaved runs (psql, CLI, API, psql, ...): rows/s of each (median and
spread), the ratio of each run, peak RSS of each and of the service while it streams, and the
machine's load."""
import argparse
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import Variant, machine_load, register_nodes, spread
from export import PeakRss, drain, run_command
from pg import DurablePostgreSQL
from tswarm.storage import open_storage

QUERY = ("SELECT r.ts, n.name, r.temperature, r.humidity FROM readings r JOIN nodes n ON n.id = r.node_id"
         " ORDER BY r.ts, r.id")


def fill(data_dir: Path, url: str, rows: int, nodes: int = 100) -> None:
    names = register_nodes(data_dir, nodes, scrypt_n=2**10, database_url=url)
    with open_storage(data_dir, url) as journal:
        base = 1_700_000_000 * 10**9
        step = 200_000  # one transaction each
        for start in range(0, rows, step):
            journal.add_readings(
                (names[i % nodes], base + i * (300 * 10**9 // nodes), round(random.uniform(-40, 80), 1),
                 round(random.uniform(0, 100), 1)) for i in range(start, min(rows, start + step))
            )


def main(rows: int, runs: int) -> None:
    with DurablePostgreSQL() as server, tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        url = server.new_database()
        t0 = time.perf_counter()
        fill(data_dir, url, rows)
        with_url = {**{k: v for k, v in os.environ.items() if not k.startswith("TSWARM_")},
                    "TSWARM_DATABASE_URL": url, "TSWARM_DATA_DIR": str(data_dir)}
        print(f"generated {rows} readings in PostgreSQL {server.setting('server_version').split()[0]}"
              f" in {time.perf_counter() - t0:.0f} s", flush=True)
        figures: dict[str, list[tuple[float, int, float]]] = {"psql": [], "cli": [], "api": []}
        idle = []
        with Variant(data_dir, database_url=url) as service:
            for run in range(1, runs + 1):
                before = machine_load()
                figures["psql"].append(run_command(["psql", url, "-X", "-q", "-c", f"\\copy ({QUERY}) TO STDOUT CSV HEADER"]))
                figures["cli"].append(run_command([sys.executable, "-m", "tswarm", "export"], env=with_url))
                idle.append(service.rss_mb())
                started = time.perf_counter()
                with PeakRss(service.proc.pid) as peak, \
                        urllib.request.urlopen(service.url + "/api/readings?format=csv", timeout=600) as resp:
                    size = drain(resp)
                figures["api"].append((time.perf_counter() - started, size, peak.mb))
                psql_s, cli_s, api_s = (figures[k][-1][0] for k in ("psql", "cli", "api"))
                print(f"run {run}: psql \\copy {rows / psql_s:9,.0f} rows/s, tswarm export {rows / cli_s:9,.0f} rows/s"
                      f" ({psql_s / cli_s:.2f}), GET /api/readings {rows / api_s:9,.0f} rows/s ({psql_s / api_s:.2f});"
                      f" service RSS {idle[-1]:.0f} MB idle, {figures['api'][-1][2]:.0f} MB peak ({before})", flush=True)
    print()
    base = [rows / s for s, _, _ in figures["psql"]]
    for key, label in (("psql", "psql \\copy CSV (baseline)"), ("cli", "tswarm export"), ("api", "GET /api/readings")):
        rates = [rows / s for s, _, _ in figures[key]]
        ratios = [r / b for r, b in zip(rates, base)]
        print(f"{label:26} {spread(rates)} rows/s  {figures[key][-1][1] / 1e6:5.0f} MB"
              f"  peak RSS {max(m for _, _, m in figures[key]):4.0f} MB  ratio to psql {spread(ratios)} (target ≥ 0.5)")
    print(f"service RSS idle {min(idle):.0f}–{max(idle):.0f} MB ({machine_load()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each")
    args = parser.parse_args()
    main(args.rows, args.runs)
