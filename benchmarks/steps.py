"""Steps: what each change bought, measured side by side. `tswarm serve` of several commits of this
repository (each its own `service/`, from `git archive`, its own journal made by that code) beside the
bare aiohttp handler of ceilings.py, all started once, then wrk in interleaved rounds: for a new
connection per request and for keep-alive, every target one after the other.

Per run: 2xx/s, service CPU per request (its process tree, /proc) and the ratio to the bare handler
of the same round; then median and min–max per target. The default commits are issue 16's steps
(see benchmarks/README.md, "What each step bought"). Not pass/fail: exit 0.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ceilings import BareAiohttp
from common import PASSWORD, ROOT, free_port, median, process_cpu_seconds, run_wrk, tree_pids, write_nodes_file

STEPS = {  # issue 16, in the order they landed
    "before": "e7fa3a4",
    "access-log-off": "379fd93",
    "counts-answers-middleware": "d6291c1",
    "snapshot": "f7637e0",
    "inserts-wal-index-flock": "7c056b3",
    "writer-thread-drains-the-queue": "3834d21",
}
# run by each commit's own code: the journal in the schema that code knows, nodes as `node add` would
# store a generated password (a cheap scrypt: the first request's verify is not what is measured)
REGISTER = r"""
import sys, time
from pathlib import Path
from tswarm import auth
from tswarm.storage import open_storage
data_dir, count = Path(sys.argv[1]), int(sys.argv[2])
password_hash = auth.hash_password(sys.argv[3], n=16)
now = time.time_ns()
with open_storage(data_dir) as journal:
    journal.conn.execute("BEGIN")
    journal.conn.executemany(
        "INSERT INTO nodes (name, password_hash, registered_at, created_at) VALUES (?, ?, ?, ?)",
        [(f"node{i:05d}", password_hash, now, now) for i in range(count)])
    journal.conn.execute("COMMIT")
"""


def checkout(commit: str, into: Path) -> Path:
    """``service/`` of ``commit`` as an importable ``tswarm`` under ``into`` (a PYTHONPATH entry)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "service"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "tswarm").symlink_to(into / "service")
    return into


def serve(code: Path, data_dir: Path, nodes: int, workers: int = 1) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_") and k not in ("DATABASE_URL", "PORT")}
    port = free_port()
    env.update(PYTHONPATH=str(code), TSWARM_DATA_DIR=str(data_dir), TSWARM_HOST="127.0.0.1", TSWARM_PORT=str(port),
               TSWARM_WORKERS=str(workers))
    subprocess.run([sys.executable, "-c", REGISTER, str(data_dir), str(nodes), PASSWORD], env=env, check=True)
    log = open(data_dir / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tswarm", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{code}: tswarm serve did not start; see {data_dir / 'serve.log'}")
            time.sleep(0.1)


def measure(targets: dict[str, tuple[str, int]], nodes_file: Path, args: argparse.Namespace) -> dict:
    """The interleaved rounds: ``{(mode, target): [(2xx/s, CPU µs per request, ratio to bare), ...]}``."""
    for url, _ in targets.values():  # every node's first request (its scrypt) before the clock
        run_wrk(url, nodes_file, keepalive=True, seconds=1)
    print(f"load average before: {os.getloadavg()}", flush=True)
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for round_no in range(1, args.rounds + 1):
        for mode in ("new connection", "keep-alive"):
            for label, (url, pid) in targets.items():
                pids = tree_pids(pid)
                before = process_cpu_seconds(pids)
                out = run_wrk(url, nodes_file, keepalive=mode == "keep-alive", seconds=args.seconds)
                cpu_us = (process_cpu_seconds(pids) - before) / max(1, out["requests"]) * 1e6
                # the bare handler runs first in every round: its own run is this round's base
                base = out["ok_per_s"] if label == "bare-aiohttp" else runs[(mode, "bare-aiohttp")][-1][0]
                runs.setdefault((mode, label), []).append((out["ok_per_s"], cpu_us, out["ok_per_s"] / base))
                print(f"round {round_no} {mode:15s} {label:27s} {out['ok_per_s']:8,.0f}/s {cpu_us:5.0f} µs/req"
                      f"  / bare {out['ok_per_s'] / base:.2f}  non-2xx {out['non_2xx']}", flush=True)
    return runs


def main(args: argparse.Namespace) -> None:
    steps = dict(STEPS) if not args.commits else {c: c for c in args.commits}
    with tempfile.TemporaryDirectory(prefix="tswarm-steps-") as tmp:
        tmp = Path(tmp)
        nodes_file = write_nodes_file(tmp / "nodes.txt", [f"node{i:05d}" for i in range(args.nodes)])
        targets, procs = {}, []
        with BareAiohttp() as bare:
            targets["bare-aiohttp"] = (bare.url, bare.proc.pid)
            try:
                for label, commit in steps.items():
                    code = checkout(commit, tmp / f"code-{label}")
                    (tmp / f"data-{label}").mkdir()
                    proc, url = serve(code, tmp / f"data-{label}", args.nodes, args.workers)
                    procs.append(proc)
                    targets[label] = (url, proc.pid)
                runs = measure(targets, nodes_file, args)
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait()
    print(f"\nover {args.rounds} rounds, median (min–max); load average after: {os.getloadavg()}")
    for (mode, label), values in runs.items():
        rates, cpus, ratios = zip(*values)
        print(f"{mode:15s} {label:27s} {median(rates):8,.0f}/s ({min(rates):,.0f}–{max(rates):,.0f})"
              f"  {median(cpus):5.0f} µs/req  / bare {median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk's -d per run (default 5)")
    parser.add_argument("--nodes", type=int, default=300, help="registered nodes the requests cycle over (default 300)")
    parser.add_argument("--commits", nargs="+", help="commits to compare instead of issue 16's steps")
    parser.add_argument("--workers", type=int, default=1, help="each commit's `tswarm serve --workers N` (default 1)")
    main(parser.parse_args())
