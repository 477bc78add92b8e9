"""Workers: `tswarm serve --workers N` for N = 1, 2, 3, interleaved in rounds, driven by wrk.

The harness of ingest.py (benchmarks/wrk/put_reading.lua: PUT with Basic auth as the firmware
sends it, cycling over --nodes registered nodes, `wrk -t2 -c50 -d<seconds> --latency`), with wrk on
the same machine as the workers. Each service (`tswarm serve` as shipped, default settings, one
journal each) is started once and warmed up (every node several times on new connections, so each
worker's credential cache has seen nearly every node); then each round runs, for a new connection
per request and then keep-alive, N = 1, 2, 3 one after the other. Per run: 2xx/s and the ratio to
1 worker of the same round and mode, p50/p99, non-2xx, service CPU (cores, and µs per request: the
supervisor and its workers), its threads' context switches per request (voluntary + involuntary:
waiting, and being preempted by another runnable thread), wrk's CPU per request, scrypts inside the
window (credential cache misses), and, from every worker's /metrics (tswarm_journal_commit_batch_size and
tswarm_journal_commit_seconds), the commits per second, the mean group size and commit time, and
the commit share (commit seconds of all workers / run seconds: above 1, commits overlap, waiting for
each other at SQLite's write lock).

Beside it, in the same rounds (--kinds), the same worker counts of what tswarm cannot beat, so the
curve says where scaling stops:

  tswarm        `tswarm serve --workers N` as shipped
  no-commit     the same, its writers answering at once and storing nothing   serve_variant.py --no-commit
                (every worker's handler, login and JSON, without the commit: what the commits cost)
  bare-aiohttp  N bare aiohttp processes sharing the port as the workers do   ceilings.py --processes N
                (no auth, no storage: what any aiohttp app's N processes reach beside wrk here)

--max-ts-cost also times what `--workers` added to every group commit: SELECT MAX(ts) under the
write lock, on a journal of a million readings.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from ceilings import BareAiohttp
from common import (Variant, add_wrk_arguments, begin, finish, load, main, median, register_nodes, run_wrk, scrape_workers,
                    warn_non_2xx, worker_deltas, write_nodes_file)

from tswarm.storage import open_storage

MODES = (("new connection", False), ("keep-alive", True))
KINDS = ("tswarm", "no-commit", "bare-aiohttp")  # in this order within a round
SAMPLES = ("tswarm_journal_commit_batch_size_sum", "tswarm_journal_commit_batch_size_count",
           "tswarm_journal_commit_seconds_sum", "tswarm_journal_commit_seconds_count", "tswarm_auth_cache_misses_total")


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


def measure(service, workers: int, nodes_file: Path, *, keepalive: bool, args) -> dict:
    tswarm = isinstance(service, Variant)  # the bare processes have no /metrics
    before = scrape_workers(service.url, workers, SAMPLES) if tswarm else {}
    cpu_before, wall_before, switches_before = service.cpu_seconds(), time.monotonic(), service.switches()
    figures = run_wrk(service.url, nodes_file, keepalive=keepalive, seconds=args.seconds, threads=args.threads,
                      connections=args.connections)
    cpu, wall = service.cpu_seconds() - cpu_before, time.monotonic() - wall_before
    voluntary, involuntary = (a - b for a, b in zip(service.switches(), switches_before))
    delta, seen = worker_deltas(before, scrape_workers(service.url, workers, SAMPLES)) if tswarm else ({}, workers)
    commits = delta.get("tswarm_journal_commit_batch_size_count", 0.0)
    commit_s = delta.get("tswarm_journal_commit_seconds_sum", 0.0)
    figures.update(
        service_cores=cpu / wall,
        service_cpu_us=cpu / max(1, figures["requests"]) * 1e6,
        switches_vol=voluntary / max(1, figures["requests"]),
        switches_invol=involuntary / max(1, figures["requests"]),
        workers_seen=seen,
        scrypts=delta.get("tswarm_auth_cache_misses_total", 0.0),
        commits_per_s=commits / figures["seconds"],
        group_mean=delta.get("tswarm_journal_commit_batch_size_sum", 0.0) / commits if commits else 0.0,
        commit_ms=commit_s / delta.get("tswarm_journal_commit_seconds_count", 0.0) * 1000 if commits else 0.0,
        commit_share=commit_s / figures["seconds"],
    )
    return figures


def row(run: dict) -> str:
    bad = f"  NON-2xx {run['non_2xx']} {run['statuses']}" if run["non_2xx"] else ""
    errors = f"  socket errors {run['socket_errors']}" if run["socket_errors"] else ""
    partial = f"  (metrics of {run['workers_seen']} of {run['workers']} workers)" if run["workers_seen"] < run["workers"] else ""
    return (f"{run['kind']:12} {run['workers']} worker{'s' if run['workers'] > 1 else ' '} {run['mode']:14} {run['ok_per_s']:7,.0f}/s"
            f"  x{run['ratio']:4.2f}  p50 {run['p50_ms']:6.1f} ms  p99 {run['p99_ms']:6.1f} ms"
            f"  service {run['service_cores']:4.2f} cores {run['service_cpu_us']:4.0f} µs/req"
            f"  switches/req {run['switches_vol']:4.2f}+{run['switches_invol']:4.2f}  wrk {run['wrk_cpu_us']:3.0f} µs/req"
            + (f"  commits {run['commits_per_s']:5.0f}/s group {run['group_mean']:5.1f} commit {run['commit_ms']:5.2f} ms"
               f"  commit share {run['commit_share']:4.2f}" if run["kind"] == "tswarm" else "")
            + (f"  scrypts {run['scrypts']:.0f}" if run["kind"] != "bare-aiohttp" else "") + f"{partial}{bad}{errors}")


def summarize(runs: list[dict]) -> list[dict]:
    summary = []
    groups = dict.fromkeys((r["mode"], r["kind"], r["workers"]) for r in runs)
    for mode, kind, workers in sorted(groups, key=lambda g: ([m for m, _ in MODES].index(g[0]), KINDS.index(g[1]))):
        group = [r for r in runs if (r["mode"], r["kind"], r["workers"]) == (mode, kind, workers)]
        entry = {"mode": mode, "kind": kind, "workers": workers, "rounds": len(group),
                 "non_2xx": sum(r["non_2xx"] for r in group)}
        for field in ("ok_per_s", "ratio", "p50_ms", "p99_ms", "service_cores", "service_cpu_us", "switches_vol",
                      "switches_invol", "wrk_cpu_us",
                      "commits_per_s", "group_mean", "commit_ms", "commit_share"):
            values = [r[field] for r in group]
            entry[field] = {"median": median(values), "min": min(values), "max": max(values)}
        summary.append(entry)
    return summary


def spread(entry: dict, field: str, fmt: str) -> str:
    v = entry[field]
    return f"{format(v['median'], fmt)} ({format(v['min'], fmt)}–{format(v['max'], fmt)})"


def print_summary(summary: list[dict], rounds: int) -> None:
    print(f"\nSummary over {rounds} round(s): median (min–max)")
    print(f"{'kind':12} {'workers':8} {'connection':14} {'2xx/s':>22} {'vs 1 worker':>18} {'p50 ms':>7} {'p99 ms':>7}"
          f" {'service cores':>14} {'µs/req':>7} {'switches/req':>13} {'wrk µs/req':>10} {'commits/s':>10} {'group':>20} {'commit ms':>10}"
          f" {'commit share':>13}")
    for e in summary:
        bad = f"  NON-2xx {e['non_2xx']}" if e["non_2xx"] else ""
        print(f"{e['kind']:12} {e['workers']:<8} {e['mode']:14} {spread(e, 'ok_per_s', ',.0f'):>22} {spread(e, 'ratio', '.2f'):>18}"
              f" {e['p50_ms']['median']:7.1f} {e['p99_ms']['median']:7.1f} {e['service_cores']['median']:14.2f}"
              f" {e['service_cpu_us']['median']:7.0f}"
              f" {format(e['switches_vol']['median'], '.2f') + '+' + format(e['switches_invol']['median'], '.2f'):>13}"
              f" {e['wrk_cpu_us']['median']:10.0f}"
              + (f" {e['commits_per_s']['median']:10.0f} {spread(e, 'group_mean', '.1f'):>20} {e['commit_ms']['median']:10.2f}"
                 f" {e['commit_share']['median']:13.2f}" if e["kind"] == "tswarm" else "") + bad)


def start(stack: contextlib.ExitStack, kind: str, workers: int, tmp: Path, nodes: list[str], args):
    """One target of the curve, started (stopped by ``stack``) and, tswarm's, warmed up."""
    if kind == "bare-aiohttp":
        return stack.enter_context(BareAiohttp(processes=workers))
    data_dir = tmp / f"{kind}{workers}" / "data"
    register_nodes(data_dir, len(nodes), scrypt_n=2**10)
    service = stack.enter_context(Variant(data_dir, cli=True, workers=workers, log_level=None) if kind == "tswarm"
                                  else Variant(data_dir, workers=workers, log_level=None, no_commit=True))
    passes = 1 if workers == 1 else 3 * workers  # new connections land on any worker: several passes
    warm = load(service.url, nodes, concurrency=50, seconds=0, keepalive=False, procs=args.procs, rounds=passes)
    print(f"{kind}: {workers} worker(s) started and warmed up ({passes} reading(s) per node; {warm['statuses']})",
          flush=True)
    return service


def print_scaling(summary: list[dict], args) -> None:
    """The curve in one line a mode: each kind's N workers over its one (median of the rounds)."""
    base = args.workers[0]
    for mode, _ in MODES:
        parts = []
        for kind in args.kinds:
            ratios = [f"{e['workers']}: {e['ratio']['median']:.2f} ({e['ratio']['min']:.2f}–{e['ratio']['max']:.2f})"
                      for e in summary if e["mode"] == mode and e["kind"] == kind and e["workers"] != base]
            parts.append(f"{kind} " + ", ".join(ratios))
        print(f"vs {base} worker(s), {mode}: " + "; ".join(parts))


def run(args) -> dict:
    args.kinds = [k for k in KINDS if k in args.kinds]
    machine, load_before, started = begin(
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.nodes} nodes, workers {args.workers},"
        f" {args.rounds} round(s), {', '.join(args.kinds)}", nginx=False)
    result = {"machine": machine, "settings": vars(args), "load_before": load_before}
    if args.max_ts_cost:
        result["max_ts_us"] = max_ts_cost()
        print(f"SELECT MAX(ts) under the write lock: {result['max_ts_us']:.1f} µs per group commit (1,000,000 readings)",
              flush=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tswarm-bench-workers-") as tmp, contextlib.ExitStack() as stack:
        nodes = [f"node{i:05d}" for i in range(args.nodes)]
        nodes_file = write_nodes_file(Path(tmp) / "nodes.tsv", nodes)
        services = {}
        for kind in args.kinds:
            for workers in args.workers:
                services[kind, workers] = start(stack, kind, workers, Path(tmp), nodes, args)
        for round_no in range(1, args.rounds + 1):
            print(f"\nround {round_no} (load {os.getloadavg()[0]:.2f})", flush=True)
            for mode, keepalive in MODES:
                for kind in args.kinds:
                    for workers in args.workers:
                        figures = measure(services[kind, workers], workers, nodes_file, keepalive=keepalive, args=args)
                        base = figures if workers == args.workers[0] else next(
                            r for r in runs
                            if (r["round"], r["mode"], r["kind"], r["workers"]) == (round_no, mode, kind, args.workers[0]))
                        figures.update(round=round_no, mode=mode, kind=kind, workers=workers, load=os.getloadavg()[0],
                                       ratio=figures["ok_per_s"] / base["ok_per_s"] if base["ok_per_s"] else 0.0)
                        runs.append(figures)
                        print(row(figures), flush=True)
    summary = summarize(runs)
    print_summary(summary, args.rounds)
    print_scaling(summary, args)
    warn_non_2xx(runs)
    print("commit share: the group commits' seconds in the writer thread (waiting for the write lock, inserts,"
          " fsync) of all workers per second of the run; above 1, commits overlap: they wait for each other at the lock")
    result.update(runs=runs, summary=summary)
    return finish(result, args.json, load_before, machine, started)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts (the first is the base)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                   help="what runs at each worker count (default all; always in the order above)")
    add_wrk_arguments(p)
    p.add_argument("--procs", type=int, default=2, help="loadgen.py processes for the warm-up")
    p.add_argument("--max-ts-cost", action="store_true", help="also time SELECT MAX(ts) on 1,000,000 readings")
    p.add_argument("--json", metavar="FILE", help="write every run, the summary and the machine to FILE")
    return p


if __name__ == "__main__":
    main(parser(), run)
