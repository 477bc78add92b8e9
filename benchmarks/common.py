"""Shared pieces of the benchmarks: start a service variant, register nodes fast, read RSS."""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tswarm import auth  # noqa: E402
from tswarm.storage import open_storage  # noqa: E402

PASSWORD = "benchmark-password"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_nodes(data_dir: Path, count: int, *, created: bool = True, scrypt_n: int = auth.SCRYPT_N,
                   database_url: str = "") -> list[str]:
    """Register ``count`` nodes sharing one password hash (hashing 10,000 separately would take minutes).
    Each node still costs the service one scrypt on its first request: the cache is per header.
    ``database_url``: in that PostgreSQL database (its tables made by opening it) instead of the data dir."""
    names = [f"node{i:05d}" for i in range(count)]
    password_hash = auth.hash_password(PASSWORD, n=scrypt_n)
    now = time.time_ns()
    rows = [(name, password_hash, now, now if created else None) for name in names]
    if database_url:
        import psycopg

        open_storage(data_dir, database_url).close()
        with psycopg.connect(database_url) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO nodes (name, password_hash, registered_at, created_at) VALUES (%s, %s, %s, %s)", rows)
        return names
    with open_storage(data_dir) as journal:
        journal.conn.execute("BEGIN")
        journal.conn.executemany(
            "INSERT INTO nodes (name, password_hash, registered_at, created_at) VALUES (?, ?, ?, ?)",
            rows,
        )
        journal.conn.execute("COMMIT")
    return names


def header(name: str) -> str:
    return " Basic " + base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()


class Served:
    """A server process on loopback ``self.port`` that answers ``GET /healthz`` once ready: started by
    :meth:`_start`, stopped by ``__exit__``; its stderr kept in a file (:meth:`stderr`), its processes
    (with their children: workers) measured by :meth:`pids`, :meth:`rss_mb`, :meth:`cpu_seconds`."""

    port: int
    proc: "subprocess.Popen | None" = None
    _log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, args: list[str], env: dict, what: str):
        # stderr to a file, never an unread pipe: a service logging every request would fill the pipe and stall
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=self._log)
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.stderr())
                time.sleep(0.05)
        self.proc.terminate()
        raise RuntimeError(f"{what} did not start: " + self.stderr())

    def stderr(self) -> str:
        """What the process wrote to stderr so far (its last 4,000 characters)."""
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        self._log.seek(0, 2)
        return text[-4000:]

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self._log.close()

    def pids(self) -> list[int]:
        """The process and, with workers, the worker processes it started."""
        return tree_pids(self.proc.pid)

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the processes have used so far."""
        return process_cpu_seconds(self.pids())

    def switches(self) -> tuple[int, int]:
        """Context switches of every thread of the processes so far (:func:`context_switches`)."""
        return context_switches(self.pids())


class Variant(Served):
    """`benchmarks/serve_variant.py`: the shipped service with one journal knob changed, or run as
    ``workers`` processes (`tswarm serve --workers N`)."""

    def __init__(self, data_dir: Path, *, synchronous: str = "FULL", max_batch: int = 5000, workers: int = 1,
                 database_url: str = "", cli: bool = False, log_level: Optional[str] = "WARNING", shell: bool = False,
                 no_commit: bool = False):
        """``cli``: run `tswarm serve` itself (the command as shipped, its default settings) instead of
        serve_variant.py (the knobs then must be their defaults). ``log_level``: TSWARM_LOG_LEVEL, or
        None for the shipped default (serve_variant.py configures logging as `tswarm serve` does).
        ``shell``: serve_variant.py's ``--shell`` (the node route answers at once inside tswarm's app);
        ``no_commit``: its ``--no-commit`` (the whole handler, the writer answering at once)."""
        self.data_dir = data_dir
        self.port = free_port()
        self.log_level = log_level
        if cli:
            if (synchronous, max_batch, database_url, shell, no_commit) != ("FULL", 5000, "", False, False):
                raise ValueError("cli=True runs `tswarm serve` as shipped: no knobs")
            self.args = [sys.executable, "-m", "tswarm", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                         "--data-dir", str(data_dir)] + (["--workers", str(workers)] if workers > 1 else [])
        else:
            self.args = [sys.executable, str(ROOT / "benchmarks" / "serve_variant.py"), "--port", str(self.port),
                         "--data-dir", str(data_dir), "--synchronous", synchronous, "--max-batch", str(max_batch),
                         "--workers", str(workers)] + (["--database-url", database_url] if database_url else []) \
                + (["--shell"] if shell else []) + (["--no-commit"] if no_commit else [])

    def __enter__(self) -> "Variant":
        # The shipped defaults: no TSWARM_* of the caller's, no PostgreSQL URL, no Heroku PORT.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_") and k not in ("DATABASE_URL", "PORT")}
        if self.log_level:
            env["TSWARM_LOG_LEVEL"] = self.log_level
        return self._start(self.args, env, "service")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (each process's children, from every one of its threads)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            found.extend(tree_pids(int(child)))
    return list(dict.fromkeys(found))


def process_cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, all threads) the processes ``pids`` have used so far (/proc/PID/stat)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def context_switches(pids: list[int]) -> tuple[int, int]:
    """``(voluntary, involuntary)`` context switches of every thread of ``pids`` so far
    (/proc/PID/task/TID/status): a thread that waits (epoll, a lock, the GIL, fsync) switches
    voluntarily; one whose core was given to another runnable thread, involuntarily."""
    voluntary = involuntary = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:  # the thread ended meanwhile
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def metric_sum(url: str, name: str) -> tuple[float, float]:
    """``(name_sum, name_count)`` of a histogram of ``GET /metrics`` (loopback needs no token)."""
    found = {}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            key, _, value = line.rpartition(" ")
            if key in (f"{name}_sum", f"{name}_count"):
                found[key] = float(value)
    return found.get(f"{name}_sum", 0.0), found.get(f"{name}_count", 0.0)


def spread(values: list[float]) -> str:
    """median (min–max) of several runs."""
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    return f"{mid:,.0f} ({ordered[0]:,.0f}–{ordered[-1]:,.0f})" if mid >= 100 else f"{mid:.2f} ({ordered[0]:.2f}–{ordered[-1]:.2f})"


def machine_load() -> str:
    """The 1-minute load average and the cores: how busy the machine was (other work shares it)."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(url: str, names: list[str], *, concurrency: int, seconds: float, keepalive: bool, procs: int = 1,
         rounds: int = 0) -> dict:
    """Run ``procs`` processes of benchmarks/loadgen.py, each with its share of the nodes and of the
    concurrency, and merge their figures. ``rounds``: every node sends that many readings, then stop
    (a warm-up that reaches every node: its first reading costs a scrypt)."""
    share = len(names) // procs
    cmds = [
        [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), url, "--nodes", str(share), "--offset", str(k * share),
         "--concurrency", str(max(1, concurrency // procs)), "--seconds", str(seconds), "--raw",
         "--rounds", str(rounds)]
        + (["--keepalive"] if keepalive else [])
        for k in range(procs)
    ]
    running = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for cmd in cmds]
    parts = [json.loads(p.communicate(timeout=seconds * 10 + 600)[0]) for p in running]
    latencies = sorted(x for part in parts for x in part["latencies_ms"])
    statuses: dict[str, int] = {}
    for part in parts:
        for code, n in part["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0  # noqa: E731
    return {
        "accepted": sum(p["accepted"] for p in parts),
        "statuses": statuses,
        "readings_per_s": sum(p["readings_per_s"] for p in parts),
        "client_cpu_us": sum(p["cpu_seconds"] for p in parts) / max(1, sum(statuses.values())) * 1e6,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
    }


# --- wrk: the load generator of ingest.py and workers.py (Debian's `wrk`, C: little CPU per request) ---

WRK_SCRIPT = ROOT / "benchmarks" / "wrk" / "put_reading.lua"


def add_wrk_arguments(p) -> None:
    """The options every wrk-driven benchmark (ingest.py, workers.py, seed_peer.py) takes alike."""
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=int, default=5, help="wrk's -d per run, whole seconds (default 5)")
    p.add_argument("--nodes", type=int, default=2000, help="registered nodes the requests cycle over (default 2000)")
    p.add_argument("--connections", type=int, default=50, help="wrk's -c (default 50)")
    p.add_argument("--threads", type=int, default=2, help="wrk's -t (default 2)")


def write_nodes_file(path: Path, names: list[str]) -> Path:
    """The nodes for benchmarks/wrk/put_reading.lua: "<name><TAB><Authorization value>" a line."""
    path.write_text("".join(f"{name}\t{header(name)}\n" for name in names))
    return path


def run_wrk(url: str, nodes_file: Path, *, keepalive: bool, seconds: float, threads: int = 2, connections: int = 50,
            wrk: str = "wrk") -> dict:
    """One wrk run of benchmarks/wrk/put_reading.lua against ``url``: every request a reading PUT by one
    of the nodes in ``nodes_file``, with `Connection: close` unless ``keepalive``.

    Returns requests/s of 2xx answers (``ok_per_s``), all requests/s, p50/p90/p99 latency (ms, wrk
    ``--latency``), the answers by status, non-2xx, socket errors, and wrk's own CPU (user + system,
    from ``os.wait4``: the child's rusage) per request."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
           "-s", str(WRK_SCRIPT), url, "--", str(nodes_file), "keep-alive" if keepalive else "close", str(threads)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("wrk-json ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]}")
    raw = json.loads(line[len("wrk-json "):])
    elapsed = raw["duration_us"] / 1e6
    statuses = {code: n for code, n in sorted(raw["statuses"].items())}
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    errors = {k: v for k, v in raw["errors"].items() if k != "status" and v}
    wrk_cpu = usage.ru_utime + usage.ru_stime
    return {
        "requests": raw["requests"],
        "seconds": elapsed,
        "ok_per_s": ok / elapsed,
        "requests_per_s": raw["requests"] / elapsed,
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p90_ms": raw["latency_us"]["p90"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "statuses": statuses,
        "non_2xx": raw["requests"] - ok,
        "socket_errors": errors,
        "wrk_cpu_s": wrk_cpu,
        "wrk_cpu_us": wrk_cpu / max(1, raw["requests"]) * 1e6,
    }


def wrk_available(wrk: str = "wrk") -> bool:
    import shutil

    return shutil.which(wrk) is not None


# --- what a run needs printed beside it: the machine, the versions, the spread ---


def machine_info() -> dict:
    """CPU model and count, Python, aiohttp and SQLite versions, wrk and nginx versions."""
    import platform
    import sqlite3

    import aiohttp

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "not installed"

    return {
        "cpu": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "sqlite": sqlite3.sqlite_version,
        "wrk": version(["wrk", "--version"]),
        "nginx": version(["nginx", "-v"]),
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def metrics_text(url: str) -> str:
    """``GET /metrics`` (loopback needs no token), on a new connection."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


WORKER_KEY = "tswarm_journal_commit_seconds_created"  # made when a worker's metrics are: one value per process


def scrape_workers(url: str, workers: int, names: tuple[str, ...], tries_per_worker: int = 15) -> dict:
    """``{worker: {sample: value}}`` of the samples ``names`` from every worker's ``GET /metrics``.

    /metrics answers for the worker that took the connection (docs/deployment.md), and the kernel
    spreads new connections over the workers (SO_REUSEPORT), so it is asked on new connections
    until ``workers`` distinct workers answered (told apart by when their metrics were made), or
    ``tries_per_worker * workers`` tries; fewer found means a partial sum (the caller says so)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict = {}
    for _ in range(tries_per_worker * workers):
        samples = {}
        for family in text_string_to_metric_families(metrics_text(url)):
            for sample in family.samples:
                if sample.name in names or sample.name == WORKER_KEY:
                    samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
        found[samples.pop(WORKER_KEY, None)] = samples
        if len(found) >= workers:
            break
    return found


def worker_deltas(before: dict, after: dict) -> tuple[dict, int]:
    """Per sample, the sum over workers of (after - before); and how many workers were seen both times."""
    common_workers = [w for w in after if w in before]
    total: dict = {}
    for w in common_workers:
        for name, value in after[w].items():
            total[name] = total.get(name, 0.0) + value - before[w].get(name, 0.0)
    return total, len(common_workers)


def begin(setup: str, *, nginx: bool = True) -> tuple[dict, tuple, float]:
    """The start of a wrk benchmark: the machine and the versions, ``setup`` (what the runs are) with the
    load average; returns ``(machine, load_before, started)`` for :func:`finish`."""
    machine, load_before, started = machine_info(), os.getloadavg(), time.monotonic()
    print(f"{machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, aiohttp {machine['aiohttp']},"
          f" SQLite {machine['sqlite']}; {machine['wrk'].split(' Copyright')[0]}" + (f"; {machine['nginx']}" if nginx else ""))
    print(f"{setup}; load average before: {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    return machine, load_before, started


def warn_non_2xx(runs: list[dict]) -> None:
    """After a summary: say so when some run's rate left answers out (it counts 2xx only)."""
    if any(r["non_2xx"] for r in runs):
        print("some runs got answers other than 2xx: see NON-2xx above (their rate counts 2xx only)")


def main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any]) -> None:
    """A wrk benchmark's ``__main__``: its arguments, a clear exit without wrk, then ``run``."""
    arguments = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: run `make bench-deps` (scripts/bench-deps.sh)")
    run(arguments)


def finish(result: dict, json_path, load_before, machine: dict, started: float) -> dict:
    """The end of a wrk benchmark: the load average before and now, the time taken, and ``result``
    (with ``load_after``) written to ``json_path`` when one is given."""
    load_after = os.getloadavg()
    shown = lambda load: " ".join(f"{x:.2f}" for x in load)  # noqa: E731
    print(f"load average before: {shown(load_before)}; after: {shown(load_after)} ({machine['cores']} cores);"
          f" {time.monotonic() - started:.0f} s")
    result["load_after"] = load_after
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {json_path}")
    return result
