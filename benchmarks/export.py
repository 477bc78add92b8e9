"""Export: N readings as CSV through `tswarm export` and `GET /api/readings`, against the sqlite3
command-line shell's own CSV output of the same rows (the near-limit baseline), in interleaved rounds.

Each round runs, one after the other on the same journal: ``sqlite3 -csv``, ``tswarm export`` (a new
process, its output drained through a pipe), ``GET /api/readings`` (one service, started before the
first round, read with urllib). Per run: rows/s, bytes, rows written (counted: a short export says
so), peak RSS (sampled every 50 ms) and CPU seconds of the process that wrote the rows. Per round: the
ratios to ``sqlite3`` of that round and the load average before it. Then the spread over the rounds
(median, min–max) per method and ratio, the load average before and after, and the service's RSS
idle and after (memory flat: the export does not grow it).

``--also-code DIR``: the CLI and the API of another checkout's ``service/`` too (e.g. ``git worktree
add /tmp/main main``), in the same rounds, so a change is measured against the code before it side by
side. ``--json FILE`` writes everything. Exit 0 always: a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import Variant, register_nodes, rss_mb
from tswarm.storage import DB_FILENAME, open_storage
from tswarm.storage.interface import ReadingExtra

TARGET = 0.5  # tswarm's rows/s at least half of sqlite3's, CLI and API, in the same round
BASELINE_QUERY = ("SELECT r.ts, n.name, r.temperature, r.humidity{} FROM readings r JOIN nodes n ON n.id = r.node_id"
                  " ORDER BY r.ts, r.id")
TELEMETRY_COLUMNS = ", r.vbat, r.rssi, r.awake_ms, r.lost"  # the baseline's with --telemetry


def baseline_query(telemetry: bool) -> str:
    return BASELINE_QUERY.format(TELEMETRY_COLUMNS if telemetry else "")


def fill(data_dir: Path, rows: int, nodes: int = 100, telemetry: bool = False) -> None:
    """``rows`` readings of ``nodes`` nodes, 3 s apart (a node every 300 s), one decimal as a DHT22 sends;
    ``telemetry``: each with what today's firmware sends beside it (battery volts to the millivolt, RSSI,
    the previous wake's ms, readings lost), else without (the readings of before)."""
    names = register_nodes(data_dir, nodes, scrypt_n=2**10)
    with open_storage(data_dir) as journal:
        base = 1_700_000_000 * 10**9
        step = 200_000  # one transaction each
        for start in range(0, rows, step):
            journal.add_readings(
                (names[i % nodes], base + i * (300 * 10**9 // nodes), round(random.uniform(-40, 80), 1),
                 round(random.uniform(0, 100), 1))
                + ((ReadingExtra(random.randint(3000, 4200) / 1000, random.randint(-90, -30), random.randint(800, 4000),
                                 0),) if telemetry else ())
                for i in range(start, min(rows, start + step))
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


def drain(stream) -> tuple[int, int]:
    """(bytes, lines) read from ``stream`` to its end."""
    size = lines = 0
    while chunk := stream.read(1 << 20):
        size += len(chunk)
        lines += chunk.count(b"\n")
    return size, lines


def run_command(cmd: list[str], env: dict | None = None) -> dict:
    """One command's run: seconds, bytes and lines on stdout, peak RSS MB, CPU seconds (its rusage)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    with PeakRss(proc.pid) as peak:
        size, lines = drain(proc.stdout)
        _, status, usage = os.wait4(proc.pid, 0)
    return {"seconds": time.perf_counter() - started, "bytes": size, "lines": lines, "peak_rss_mb": peak.mb,
            "cpu_s": usage.ru_utime + usage.ru_stime, "exit": os.waitstatus_to_exitcode(status)}


def run_api(data_dir: Path, env: dict) -> dict:
    """One ``GET /api/readings?format=csv`` of the whole journal from a service started for it (one
    service per data dir) and ready before the clock starts: the service's RSS idle and at its peak
    meanwhile, and its CPU."""
    with CodeVariant(data_dir, env) as service:
        idle = service.rss_mb()
        cpu0 = service.cpu_seconds()
        started = time.perf_counter()
        with PeakRss(service.proc.pid) as peak, \
                urllib.request.urlopen(service.url + "/api/readings?format=csv", timeout=900) as resp:
            size, lines = drain(resp)
        seconds = time.perf_counter() - started
        cpu = service.cpu_seconds() - cpu0
    return {"seconds": seconds, "bytes": size, "lines": lines, "peak_rss_mb": peak.mb, "idle_rss_mb": idle,
            "cpu_s": cpu, "exit": 0}


def code_env(code: Path | None, tmp: Path) -> dict:
    """The environment that runs ``tswarm`` from ``code``'s service/ (None: this checkout's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_")}
    if code is not None:
        link = tmp / "code" / "tswarm"
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            link.symlink_to(code.resolve() / "service")
        env["PYTHONPATH"] = str(link.parent)  # before the editable install of this checkout
    return env


class CodeVariant(Variant):
    """:class:`common.Variant` (the shipped service) run from another checkout's code."""

    def __init__(self, data_dir: Path, env: dict):
        super().__init__(data_dir)
        self.env = env

    def __enter__(self) -> "CodeVariant":
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            return super().__enter__()
        finally:
            os.environ.clear()
            os.environ.update(saved)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spread(values: list[float], digits: int = 0) -> str:
    """median (min–max)."""
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main(rows: int, rounds: int, also_code: Path | None, json_file: Path | None, telemetry: bool = False) -> None:
    report: dict = {
        "rows": rows, "telemetry": telemetry, "rounds": [], "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "sqlite3_shell": subprocess.run(["sqlite3", "--version"], capture_output=True,
                                                                        text=True).stdout.split()[0],
        "load_before": loadavg(),
    }
    print(f"{rows:,} readings{' with telemetry' if telemetry else ''}, {rounds} rounds; {report['cpu']}, {os.cpu_count()} cores; Python {report['python']},"
          f" SQLite {report['sqlite']} (shell {report['sqlite3_shell']}); load average {report['load_before']}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        t0 = time.perf_counter()
        fill(data_dir, rows, telemetry=telemetry)
        print(f"generated {rows:,} readings in {time.perf_counter() - t0:.0f} s")
        db = str(data_dir / DB_FILENAME)
        codes = {"": code_env(None, tmp)}
        if also_code is not None:
            codes[f" ({also_code})"] = code_env(also_code, tmp)
        for n in range(1, rounds + 1):
            load = loadavg()
            runs = {"sqlite3 -csv": run_command(["sqlite3", "-csv", "-header", db, baseline_query(telemetry)])}
            for label, env in codes.items():
                runs[f"tswarm export{label}"] = run_command(
                    [sys.executable, "-m", "tswarm", "export", "--data-dir", str(data_dir)], env=env)
                runs[f"GET /api/readings{label}"] = run_api(data_dir, env)
            base = runs["sqlite3 -csv"]["seconds"]
            for name, run in runs.items():
                run["rows_per_s"] = rows / run["seconds"]
                run["ratio"] = base / run["seconds"]
                run["cpu_us_per_row"] = run["cpu_s"] / rows * 1e6
                run["short"] = run["lines"] < rows + 1 or run["exit"] != 0  # the header line too
            met = all(runs[m]["ratio"] >= TARGET for m in ("tswarm export", "GET /api/readings"))
            report["rounds"].append({"round": n, "load_before": load, "runs": runs, "target_met": met})
            print(f"\nround {n}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}:")
            for name, run in runs.items():
                print(f"  {name:<{24 + max(map(len, codes))}} {run['rows_per_s']:10,.0f} rows/s  ratio {run['ratio']:.2f}"
                      f"  {run['bytes'] / 1e6:6.0f} MB  peak RSS {run['peak_rss_mb']:5.0f} MB"
                      f"  CPU {run['cpu_us_per_row']:.2f} µs/row" + ("  SHORT OR FAILED" if run["short"] else ""))
            print(f"  target (CLI and API >= {TARGET} of sqlite3): {'met' if met else 'NOT met'} in this round")
    report["load_after"] = loadavg()
    print(f"\nover {rounds} rounds, median (min–max); load average before {report['load_before']}, after {report['load_after']}:")
    for name in report["rounds"][0]["runs"]:
        got = [r["runs"][name] for r in report["rounds"]]
        print(f"  {name:<{24 + max(map(len, codes))}} {spread([g['rows_per_s'] for g in got])} rows/s"
              f"  ratio {spread([g['ratio'] for g in got], 2)}  peak RSS {max(g['peak_rss_mb'] for g in got):.0f} MB"
              f"  CPU {spread([g['cpu_us_per_row'] for g in got], 2)} µs/row")
    for label in codes:
        got = [r["runs"][f"GET /api/readings{label}"] for r in report["rounds"]]
        print(f"  service{label} RSS: idle {spread([g['idle_rss_mb'] for g in got])} MB,"
              f" peak while streaming {spread([g['peak_rss_mb'] for g in got])} MB")
    met = sum(r["target_met"] for r in report["rounds"])
    print(f"  target met in {met} of {rounds} rounds")
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="readings in the journal (10,000,000 for the published figure)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--also-code", type=Path, help="a checkout whose service/ runs too, in the same rounds")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--telemetry", action="store_true",
                        help="readings with the telemetry today's firmware sends (and the baseline selects it too)")
    args = parser.parse_args()
    main(args.rows, args.rounds, args.also_code, args.json, args.telemetry)
