"""The seed's stack as a peer: `tswarm serve` against a minimal Django + DRF app under gunicorn, in one run.

The peer (benchmarks/seed/) does what the seed's service did for one reading: a DRF view taking the
node's PUT /api/nodes/NAME (POST on create) with HTTP Basic auth against Django's user model, the
reading stored in SQLite through the ORM (Django's defaults: autocommit, one commit per reading),
202. It runs under gunicorn, 2 sync workers, on loopback, in two variants:

  shipped        `tswarm serve` as shipped, default settings (benchmarks/common.py Variant)
  seed-cached    the peer with each verified Authorization value cached per worker (no hash in the window)
  seed-pbkdf2    the peer as the seed had it: DRF's BasicAuthentication, Django's default hasher
                 (PBKDF2-SHA256 at Django's iteration count), a hash check on every request

The load is ingest.py's: `wrk -t2 -c50 -d<seconds> --latency -s wrk/put_reading.lua`, cycling over
--nodes registered nodes, each round a new connection per request, then keep-alive (gunicorn's sync
workers close every connection anyway: wrk reconnects), the three targets one after the other.
Before the runs tswarm and seed-cached get every node's reading (seed-cached twice, on new
connections, so both workers have seen nearly every node). After each run the script waits until
the target's CPU is idle (requests queued at the end are still served: a PBKDF2 backlog would run
into the next target's window; its CPU is printed apart). Per run: 2xx/s, p50/p99, non-2xx and
socket errors, the target's CPU per request in the window (its process tree, /proc/PID/stat), and the ratio shipped/seed of the same round and mode. Not pass/fail: exit 0.

Its dependencies (Django, djangorestframework, gunicorn: benchmarks/seed/requirements.txt) live in
their own venv, benchmarks/.seed-venv, made by the first run (pip install), never in tswarm's extras.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (PASSWORD, ROOT, Served, Variant, add_wrk_arguments, begin, finish, free_port, load, main, median,
                    register_nodes, run_wrk, warn_non_2xx, write_nodes_file)

SEED = ROOT / "benchmarks" / "seed"
SEED_VENV = ROOT / "benchmarks" / ".seed-venv"
TARGETS = ("shipped", "seed-cached", "seed-pbkdf2")
MODES = (("new connection", False), ("keep-alive", True))


def seed_venv(venv: Path) -> Path:
    """The peer's venv (made with its requirements when missing); returns its bin folder."""
    bin_dir = venv / "bin"
    if not (bin_dir / "gunicorn").exists():
        print(f"making {venv} (pip install -r {SEED / 'requirements.txt'})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", "-r", str(SEED / "requirements.txt")], check=True)
    return bin_dir


class SeedPeer(Served):
    """benchmarks/seed/ under gunicorn (``workers`` sync workers) on a free loopback port, its own
    SQLite file with ``nodes`` registered users (register.py); ``auth``: "pbkdf2" or "cached"."""

    def __init__(self, bin_dir: Path, data_dir: Path, nodes: int, auth: str, workers: int = 2):
        self.bin_dir, self.data_dir, self.nodes, self.auth, self.workers = bin_dir, data_dir, nodes, auth, workers
        self.port = free_port()
        self.env = {**os.environ, "SEED_DB": str(data_dir / "seed.sqlite3"), "SEED_AUTH": auth,
                    "DJANGO_SETTINGS_MODULE": "seedsite.settings"}

    def __enter__(self) -> "SeedPeer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        hasher = subprocess.run([str(self.bin_dir / "python"), str(SEED / "register.py"), str(self.nodes), PASSWORD],
                                env=self.env, check=True, capture_output=True, text=True).stdout.strip()
        self.hasher = hasher
        return self._start(
            [str(self.bin_dir / "gunicorn"), "--workers", str(self.workers), "--worker-class", "sync",
             "--bind", f"127.0.0.1:{self.port}", "--chdir", str(SEED), "--log-level", "warning",
             "seedsite.wsgi:application"], self.env, "gunicorn")


def wait_idle(target, *, quiet_cpu: float = 0.05, step: float = 0.5, limit: float = 120.0) -> float:
    """Wait until ``target``'s processes use less than ``quiet_cpu`` CPU seconds in ``step`` seconds
    (the requests queued when wrk stopped are served first); returns the seconds waited."""
    started = time.monotonic()
    last = target.cpu_seconds()
    while time.monotonic() - started < limit:
        time.sleep(step)
        now = target.cpu_seconds()
        if now - last < quiet_cpu:
            break
        last = now
    return time.monotonic() - started


def measure(target, nodes_file: Path, *, keepalive: bool, args) -> dict:
    cpu_before = target.cpu_seconds()
    figures = run_wrk(target.url, nodes_file, keepalive=keepalive, seconds=args.seconds, threads=args.threads,
                      connections=args.connections)
    cpu_window = target.cpu_seconds()
    figures["service_cpu_us"] = (cpu_window - cpu_before) / max(1, figures["requests"]) * 1e6
    figures["drain_s"] = wait_idle(target)
    figures["backlog_cpu_s"] = target.cpu_seconds() - cpu_window  # requests still queued when wrk stopped
    return figures


def row(run: dict) -> str:
    bad = f"  NON-2xx {run['non_2xx']} {run['statuses']}" if run["non_2xx"] else ""
    errors = f"  socket errors {run['socket_errors']}" if run.get("socket_errors") else ""
    ratio = f"  shipped/this {run['ratio']:7.1f}" if run.get("ratio") else ""
    drain = (f"  backlog after the window: {run['drain_s']:.0f} s, {run['backlog_cpu_s']:.1f} CPU s"
             if run["drain_s"] >= 1 else "")
    return (f"{run['variant']:12} {run['mode']:14} {run['ok_per_s']:9,.0f}/s  p50 {run['p50_ms']:7.1f} ms"
            f"  p99 {run['p99_ms']:7.1f} ms  service {run['service_cpu_us']:7.0f} µs/req{ratio}{bad}{errors}{drain}")


def add_ratio(runs: list[dict], run: dict) -> None:
    """shipped's 2xx/s over this seed run's, same round and mode."""
    shipped = next((r for r in runs if (r["round"], r["mode"], r["variant"]) == (run["round"], run["mode"], "shipped")), None)
    if run["variant"] != "shipped" and shipped and run["ok_per_s"]:
        run["ratio"] = shipped["ok_per_s"] / run["ok_per_s"]


def summarize(runs: list[dict]) -> list[dict]:
    summary = []
    for mode, _ in MODES:
        for variant in dict.fromkeys(r["variant"] for r in runs):
            group = [r for r in runs if (r["mode"], r["variant"]) == (mode, variant)]
            if not group:
                continue
            entry = {"mode": mode, "variant": variant, "rounds": len(group), "non_2xx": sum(r["non_2xx"] for r in group)}
            for field in ("ok_per_s", "p50_ms", "p99_ms", "service_cpu_us", "ratio"):
                values = [r[field] for r in group if field in r]  # a 0 (no answer in a short run) counts
                if values:
                    entry[field] = {"median": median(values), "min": min(values), "max": max(values)}
            summary.append(entry)
    return summary


def spread(entry: dict, field: str, fmt: str) -> str:
    v = entry.get(field)
    return f"{format(v['median'], fmt)} ({format(v['min'], fmt)}–{format(v['max'], fmt)})" if v else "-"


def print_summary(summary: list[dict], rounds: int) -> None:
    print(f"\nSummary over {rounds} round(s): median (min–max)")
    print(f"{'target':12} {'connection':14} {'2xx/s':>24} {'p50 ms':>9} {'p99 ms':>9} {'µs/req':>8} {'shipped/this':>22}")
    for e in summary:
        bad = f"  NON-2xx {e['non_2xx']}" if e["non_2xx"] else ""
        print(f"{e['variant']:12} {e['mode']:14} {spread(e, 'ok_per_s', ',.0f'):>24} {e['p50_ms']['median']:9.1f}"
              f" {e['p99_ms']['median']:9.1f} {e['service_cpu_us']['median']:8.0f} {spread(e, 'ratio', '.1f'):>22}{bad}")


def run(args) -> dict:
    bin_dir = seed_venv(Path(args.seed_venv))
    versions = subprocess.run(
        [str(bin_dir / "python"), "-c", "import django, rest_framework, gunicorn; "
         "print(f'Django {django.__version__}, DRF {rest_framework.VERSION}, gunicorn {gunicorn.__version__}')"],
        capture_output=True, text=True, check=True).stdout.strip()
    machine, load_before, started = begin(
        f"{versions}; wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.nodes} nodes,"
        f" {args.rounds} round(s), gunicorn {args.gunicorn_workers} sync workers", nginx=False)
    machine["seed"] = versions
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tswarm-bench-seed-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        nodes = [f"node{i:05d}" for i in range(args.nodes)]
        nodes_file = write_nodes_file(tmp / "nodes.tsv", nodes)
        targets = {}
        for name in args.targets:
            if name == "shipped":
                register_nodes(tmp / name / "data", args.nodes, scrypt_n=2**10)
                targets[name] = stack.enter_context(Variant(tmp / name / "data", cli=True, log_level=None))
                rounds = 1
            else:
                auth = name.split("-", 1)[1]
                targets[name] = peer = stack.enter_context(
                    SeedPeer(bin_dir, tmp / name, args.nodes, auth, workers=args.gunicorn_workers))
                print(f"{name}: users' hashes {peer.hasher}", flush=True)
                rounds = 2 if auth == "cached" else 0  # seed-pbkdf2: every request hashes anyway
            if rounds:
                warm = load(targets[name].url, nodes, concurrency=50, seconds=0, keepalive=False, procs=args.procs,
                            rounds=rounds)
                if set(warm["statuses"]) != {"202"}:
                    print(f"  warning: {name}'s warm-up got {warm['statuses']}", flush=True)
                wait_idle(targets[name])
        for round_no in range(1, args.rounds + 1):
            print(f"\nround {round_no} (load {os.getloadavg()[0]:.2f})", flush=True)
            for mode, keepalive in MODES:
                for name in args.targets:
                    figures = measure(targets[name], nodes_file, keepalive=keepalive, args=args)
                    figures.update(round=round_no, mode=mode, variant=name, load=os.getloadavg()[0])
                    add_ratio(runs, figures)
                    runs.append(figures)
                    print(row(figures), flush=True)
    summary = summarize(runs)
    print_summary(summary, args.rounds)
    warn_non_2xx(runs)
    result = {"machine": machine, "settings": vars(args), "load_before": load_before, "runs": runs, "summary": summary}
    return finish(result, args.json, load_before, machine, started)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_wrk_arguments(p)
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS),
                   help="which targets to run (default all, in this order)")
    p.add_argument("--gunicorn-workers", type=int, default=2, help="gunicorn sync workers of the peer (default 2)")
    p.add_argument("--procs", type=int, default=2, help="loadgen.py processes of the warm-up (default 2)")
    p.add_argument("--seed-venv", default=str(SEED_VENV),
                   help="the peer's venv, made with benchmarks/seed/requirements.txt when missing (default benchmarks/.seed-venv)")
    p.add_argument("--json", metavar="FILE", help="write every run, the summary and the machine to FILE")
    return p


if __name__ == "__main__":
    main(parser(), run)
