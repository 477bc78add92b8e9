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


def register_nodes(data_dir: Path, count: int, *, created: bool = True, scrypt_n: int = auth.SCRYPT_N) -> list[str]:
    """Register ``count`` nodes sharing one password hash (hashing 10,000 separately would take minutes).
    Each node still costs the service one scrypt on its first request: the cache is per header."""
    names = [f"node{i:05d}" for i in range(count)]
    password_hash = auth.hash_password(PASSWORD, n=scrypt_n)
    now = time.time_ns()
    with open_storage(data_dir) as journal:
        journal.conn.execute("BEGIN")
        journal.conn.executemany(
            "INSERT INTO nodes (name, password_hash, registered_at, created_at) VALUES (?, ?, ?, ?)",
            [(name, password_hash, now, now if created else None) for name in names],
        )
        journal.conn.execute("COMMIT")
    return names


def header(name: str) -> str:
    return " Basic " + base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()


class Variant:
    """`benchmarks/serve_variant.py`: the shipped service with one journal knob changed, or run as
    ``workers`` processes (`tswarm serve --workers N`)."""

    def __init__(self, data_dir: Path, *, synchronous: str = "FULL", max_batch: int = 5000, workers: int = 1):
        self.data_dir = data_dir
        self.port = free_port()
        self.args = [sys.executable, str(ROOT / "benchmarks" / "serve_variant.py"), "--port", str(self.port),
                     "--data-dir", str(data_dir), "--synchronous", synchronous, "--max-batch", str(max_batch),
                     "--workers", str(workers)]
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
