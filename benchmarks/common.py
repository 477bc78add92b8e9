"""Shared pieces of the benchmarks: start a service variant, register nodes fast, read RSS."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


class Variant:
    """`benchmarks/serve_variant.py`: the shipped service with one journal knob changed, or run as
    ``workers`` processes (`tswarm serve --workers N`)."""

    def __init__(self, data_dir: Path, *, synchronous: str = "FULL", max_batch: int = 5000, workers: int = 1,
                 database_url: str = ""):
        self.data_dir = data_dir
        self.port = free_port()
        self.args = [sys.executable, str(ROOT / "benchmarks" / "serve_variant.py"), "--port", str(self.port),
                     "--data-dir", str(data_dir), "--synchronous", synchronous, "--max-batch", str(max_batch),
                     "--workers", str(workers)] + (["--database-url", database_url] if database_url else [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Variant":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_")}
        env["TSWARM_LOG_LEVEL"] = "WARNING"
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode())
                time.sleep(0.05)
        raise RuntimeError("service did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(60)

    def pids(self) -> list[int]:
        """The service process and, with workers, the worker processes it started."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [self.proc.pid, *map(int, children)]

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the service's processes have used so far."""
        total = 0.0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


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
