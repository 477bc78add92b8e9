"""Ingest: readings/s, p50/p99 and CPU per request of tswarm, against its ceilings, in one run.

wrk (Debian's, C: little CPU per request) drives every target with benchmarks/wrk/put_reading.lua:
PUT /api/nodes/NAME with Basic auth as the firmware sends it (" Basic <b64>"), a DHT22 reading,
cycling over --nodes registered nodes; `wrk -t2 -c50 -d<seconds> --latency`. Each round runs, for
each connection mode (a new connection per request: `Connection: close`, as a node waking from deep
sleep; then keep-alive), in this order:

  nginx               nginx `return 202` (no storage; one worker process)        benchmarks/ceilings.py
  bare-aiohttp        a bare aiohttp handler answering 202 (no auth, no storage)  benchmarks/ceilings.py
  tswarm-shell        tswarm's app, its node route answering as bare-aiohttp does serve_variant.py --shell
                      (middleware, request handler, routes: what no handler inside it can beat)
  shipped             `tswarm serve` as shipped, default settings
  durability-off      the same with synchronous=OFF                               benchmarks/serve_variant.py
  commit-per-request  the same with max_batch=1 (one commit per reading)          benchmarks/serve_variant.py
  no-commit           (only with --variants) the shipped handler, its writer      serve_variant.py --no-commit
                      answering at once, storing nothing: the handler without the commit

Every tswarm node sends one reading before the measured window (its first costs a scrypt). Service
CPU is its process tree's (/proc/PID/stat), wrk's its rusage (os.wait4); "writer" is the part of it the
journal writer's thread spent in group commits (tswarm_journal_writer_cpu_seconds_total of
/metrics), per request. Not pass/fail: exit 0;
the target (shipped >= 0.8 of bare-aiohttp, both modes) is reported per round.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from ceilings import BareAiohttp, Nginx
from common import (Variant, add_wrk_arguments, begin, finish, load, main, median, register_nodes, run_wrk, scrape_workers,
                    warn_non_2xx, worker_deltas, write_nodes_file)

TARGET = 0.8  # shipped / bare-aiohttp, both modes
VARIANTS = {  # name: how it is started (in this order within a round)
    "nginx": None,
    "bare-aiohttp": None,
    "tswarm-shell": {"shell": True},
    "shipped": {"cli": True},
    "durability-off": {"synchronous": "OFF"},
    "commit-per-request": {"max_batch": 1},
    "no-commit": {"no_commit": True},  # not run by default: a measurement of where the cost is, no target
}
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "no-commit"]
MODES = (("new connection", False), ("keep-alive", True))
MISSES = "tswarm_auth_cache_misses_total"
WRITER_CPU = "tswarm_journal_writer_cpu_seconds_total"


def start_targets(stack: contextlib.ExitStack, tmp: Path, variants: list[str], nodes: list[str],
                  warm_procs: int) -> dict:
    """Start every target of one round (fresh journals), each tswarm node warmed up once."""
    targets = {}
    for name in variants:
        if name == "nginx":
            targets[name] = stack.enter_context(Nginx())
        elif name == "bare-aiohttp":
            targets[name] = stack.enter_context(BareAiohttp())
        else:
            data_dir = tmp / name / "data"
            register_nodes(data_dir, len(nodes), scrypt_n=2**10)
            service = stack.enter_context(Variant(data_dir, log_level=None, **VARIANTS[name]))
            warm = load(service.url, nodes, concurrency=50, seconds=0, keepalive=False, procs=warm_procs, rounds=1)
            if set(warm["statuses"]) != {"202"}:
                print(f"  warning: {name}'s warm-up got {warm['statuses']}", flush=True)
            targets[name] = service
    return targets


def measure(target, nodes_file: Path, *, keepalive: bool, args) -> dict:
    tswarm = isinstance(target, Variant)
    before = scrape_workers(target.url, 1, (MISSES, WRITER_CPU)) if tswarm else {}
    cpu_before = target.cpu_seconds()
    figures = run_wrk(target.url, nodes_file, keepalive=keepalive, seconds=args.seconds, threads=args.threads,
                      connections=args.connections)
    figures["service_cpu_us"] = (target.cpu_seconds() - cpu_before) / max(1, figures["requests"]) * 1e6
    if tswarm:  # a credential cache miss in the window is a scrypt there (the warm-up should leave none)
        deltas = worker_deltas(before, scrape_workers(target.url, 1, (MISSES, WRITER_CPU)))[0]
        figures["scrypts"] = deltas.get(MISSES, 0.0)
        figures["writer_cpu_us"] = deltas.get(WRITER_CPU, 0.0) / max(1, figures["requests"]) * 1e6
    return figures


def measure_aiohttp_client(target, nodes: list[str], *, keepalive: bool, args) -> dict:
    """The second opinion: benchmarks/loadgen.py (aiohttp client, --procs processes)."""
    cpu_before = target.cpu_seconds()
    figures = load(target.url, nodes, concurrency=args.connections, seconds=args.seconds, keepalive=keepalive,
                   procs=args.procs)
    requests = sum(figures["statuses"].values())
    ok = sum(n for code, n in figures["statuses"].items() if code.startswith("2"))
    return {
        "requests": requests, "ok_per_s": figures["readings_per_s"], "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"], "statuses": figures["statuses"], "non_2xx": requests - ok,
        "socket_errors": {}, "wrk_cpu_us": figures["client_cpu_us"],
        "service_cpu_us": (target.cpu_seconds() - cpu_before) / max(1, requests) * 1e6,
    }


def row(run: dict) -> str:
    bad = f"  NON-2xx {run['non_2xx']} {run['statuses']}" if run["non_2xx"] else ""
    errors = f"  socket errors {run['socket_errors']}" if run.get("socket_errors") else ""
    errors += f"  scrypts in the window {run['scrypts']:.0f}" if run.get("scrypts") else ""
    ratios = "".join(f"  /{k} {v:4.2f}" for k, v in run.get("ratios", {}).items())
    label = run["variant"] + (" (aiohttp client)" if run["client"] == "aiohttp" else "")
    writer = f" (writer {run['writer_cpu_us']:3.0f})" if "writer_cpu_us" in run else ""
    return (f"{label:34} {run['mode']:14} {run['ok_per_s']:9,.0f}/s  p50 {run['p50_ms']:6.1f} ms  p99 {run['p99_ms']:6.1f} ms"
            f"  service {run['service_cpu_us']:4.0f} µs/req{writer}  load gen. {run['wrk_cpu_us']:4.0f} µs/req{ratios}{bad}{errors}")


def add_ratios(runs: list[dict]) -> None:
    """Each run's ratio to bare-aiohttp and to nginx of the same round, mode and client."""
    by_key = {(r["round"], r["mode"], r["client"], r["variant"]): r for r in runs}
    for run in runs:
        run["ratios"] = {}
        if run["variant"] in ("nginx", "bare-aiohttp"):
            continue
        for ceiling in ("bare-aiohttp", "nginx"):
            base = by_key.get((run["round"], run["mode"], run["client"], ceiling))
            if base and base["ok_per_s"]:
                run["ratios"][ceiling] = run["ok_per_s"] / base["ok_per_s"]


def target_line(runs: list[dict], round_no: int) -> tuple[str, bool | None]:
    ratios = {r["mode"]: r["ratios"].get("bare-aiohttp") for r in runs
              if r["round"] == round_no and r["variant"] == "shipped" and r["client"] == "wrk"}
    if len(ratios) < len(MODES) or None in ratios.values():
        return f"round {round_no}: target not measured (needs shipped and bare-aiohttp in both modes)", None
    met = all(v >= TARGET for v in ratios.values())
    parts = ", ".join(f"{mode} {v:.2f}" for mode, v in ratios.items())
    return f"round {round_no}: target shipped >= {TARGET} x bare-aiohttp, both modes: {'MET' if met else 'not met'} ({parts})", met


def summarize(runs: list[dict]) -> list[dict]:
    summary = []
    keys = list(dict.fromkeys((r["client"], r["mode"], r["variant"]) for r in runs))
    for client, mode, variant in keys:
        group = [r for r in runs if (r["client"], r["mode"], r["variant"]) == (client, mode, variant)]
        entry = {"client": client, "mode": mode, "variant": variant, "rounds": len(group),
                 "non_2xx": sum(r["non_2xx"] for r in group)}
        for field in ("ok_per_s", "p50_ms", "p99_ms", "service_cpu_us", "wrk_cpu_us", "writer_cpu_us"):
            values = [r[field] for r in group if field in r]
            if not values:
                continue
            entry[field] = {"median": median(values), "min": min(values), "max": max(values)}
        for ceiling in ("bare-aiohttp", "nginx"):
            values = [r["ratios"][ceiling] for r in group if ceiling in r["ratios"]]
            if values:
                entry[f"ratio_{ceiling}"] = {"median": median(values), "min": min(values), "max": max(values)}
        summary.append(entry)
    return summary


def spread(entry: dict, field: str, fmt: str) -> str:
    v = entry.get(field)
    if not v:
        return ""
    return f"{format(v['median'], fmt)} ({format(v['min'], fmt)}–{format(v['max'], fmt)})"


def print_summary(summary: list[dict], rounds: int) -> None:
    print(f"\nSummary over {rounds} round(s): median (min–max)")
    header = (f"{'variant':34} {'connection':14} {'2xx/s':>24} {'p50 ms':>8} {'p99 ms':>8} {'service µs/req':>16} {'writer':>6}"
              f" {'load gen. µs/req':>16} {'/bare-aiohttp':>18} {'/nginx':>18}")
    print(header)
    for e in summary:
        label = e["variant"] + (" (aiohttp client)" if e["client"] == "aiohttp" else "")
        bad = f"  NON-2xx {e['non_2xx']}" if e["non_2xx"] else ""
        print(f"{label:34} {e['mode']:14} {spread(e, 'ok_per_s', ',.0f'):>24} {e['p50_ms']['median']:8.1f}"
              f" {e['p99_ms']['median']:8.1f} {e['service_cpu_us']['median']:16.0f}"
              f" {format(e['writer_cpu_us']['median'], '6.0f') if 'writer_cpu_us' in e else '':>6} {e['wrk_cpu_us']['median']:16.0f}"
              f" {spread(e, 'ratio_bare-aiohttp', '.2f'):>18} {spread(e, 'ratio_nginx', '.3f'):>18}{bad}")


def run(args) -> dict:
    variants = [v for v in VARIANTS if v in args.variants]
    machine, load_before, started = begin(
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.nodes} nodes, {args.rounds} round(s)")
    runs: list[dict] = []
    targets_met: list[bool | None] = []
    with tempfile.TemporaryDirectory(prefix="tswarm-bench-ingest-") as tmp:
        nodes = [f"node{i:05d}" for i in range(args.nodes)]
        nodes_file = write_nodes_file(Path(tmp) / "nodes.tsv", nodes)
        for round_no in range(1, args.rounds + 1):
            print(f"\nround {round_no} (load {os.getloadavg()[0]:.2f})", flush=True)
            with contextlib.ExitStack() as stack:
                targets = start_targets(stack, Path(tmp) / f"round{round_no}", variants, nodes, args.procs)
                for mode, keepalive in MODES:
                    for variant in variants:
                        clients = ["wrk"] + (["aiohttp"] if args.also_aiohttp_client else [])
                        for client in clients:
                            if client == "wrk":
                                figures = measure(targets[variant], nodes_file, keepalive=keepalive, args=args)
                            else:
                                figures = measure_aiohttp_client(targets[variant], nodes, keepalive=keepalive, args=args)
                            figures.update(round=round_no, mode=mode, variant=variant, client=client,
                                           load=os.getloadavg()[0])
                            runs.append(figures)
                            add_ratios(runs)
                            print(row(figures), flush=True)
            line, met = target_line(runs, round_no)
            targets_met.append(met)
            print(line, flush=True)
    summary = summarize(runs)
    print_summary(summary, args.rounds)
    for round_no, met in enumerate(targets_met, 1):
        print(target_line(runs, round_no)[0])
    warn_non_2xx(runs)
    result = {"machine": machine, "settings": vars(args), "load_before": load_before,
              "runs": runs, "summary": summary, "target": TARGET, "target_met_per_round": targets_met}
    return finish(result, args.json, load_before, machine, started)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_wrk_arguments(p)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS,
                   help="which targets to run (default all but no-commit, always in the order above)")
    p.add_argument("--also-aiohttp-client", action="store_true",
                   help="after each wrk run, the same target under benchmarks/loadgen.py (aiohttp client): a second opinion")
    p.add_argument("--procs", type=int, default=2, help="loadgen.py processes, for the warm-up and --also-aiohttp-client")
    p.add_argument("--json", metavar="FILE", help="write every run, the summary and the machine to FILE")
    return p


if __name__ == "__main__":
    main(parser(), run)
