"""Ingest: accepted readings/s and p50/p99 latency, the shipped service against its baselines.

shipped  : group commit, synchronous=FULL (a 202 means on disk)
ceiling  : the same service with durability off (synchronous=OFF)
naive    : one commit per request (max batch 1), synchronous=FULL
Each variant is measured with a new connection per request (as nodes do) and with keep-alive clients.
"""
import argparse
import os
import tempfile
from pathlib import Path

from common import Variant, load, register_nodes

VARIANTS = {"shipped": {}, "ceiling": {"synchronous": "OFF"}, "naive": {"max_batch": 1}}


def run(nodes: int, concurrency: int, seconds: float, procs: int) -> dict:
    results = {}
    for keepalive in (False, True):
        for name, knobs in VARIANTS.items():
            with tempfile.TemporaryDirectory() as tmp:
                data_dir = Path(tmp) / "data"
                names = register_nodes(data_dir, nodes, scrypt_n=2**10)
                with Variant(data_dir, **knobs) as service:
                    load(service.url, names, concurrency=concurrency, seconds=0, keepalive=keepalive, procs=procs, rounds=1)  # each node once: warm the credential cache
                    cpu_before = service.cpu_seconds()
                    figures = load(service.url, names, concurrency=concurrency, seconds=seconds, keepalive=keepalive, procs=procs)
                    figures["server_cpu_us"] = (service.cpu_seconds() - cpu_before) / max(1, sum(figures["statuses"].values())) * 1e6
            results[(name, keepalive)] = figures
            print(f"{name:8} {'keep-alive' if keepalive else 'new conn.':10} {figures['readings_per_s']:8.0f} readings/s"
                  f"  p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms  server CPU {figures['server_cpu_us']:4.0f} µs/request"
                  f"  load generator CPU {figures['client_cpu_us']:4.0f} µs/request"
                  f"  statuses {figures['statuses']}", flush=True)
    for keepalive in (False, True):
        shipped = results[("shipped", keepalive)]["readings_per_s"]
        label = "keep-alive" if keepalive else "new connection per request"
        print(f"{label}: shipped/ceiling = {shipped / results[('ceiling', keepalive)]['readings_per_s']:.2f}, "
              f"shipped/naive = {shipped / results[('naive', keepalive)]['readings_per_s']:.2f}; "
              f"one service core would take {1e6 / results[('shipped', keepalive)]['server_cpu_us']:.0f} requests/s")
        both = results[("shipped", keepalive)]["server_cpu_us"] + results[("shipped", keepalive)]["client_cpu_us"]
        print(f"  service + load generator: {both:.0f} µs of CPU per request, so {os.cpu_count()} cores shared by both"
              f" allow at most {os.cpu_count() * 1e6 / both:.0f} requests/s")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    args = parser.parse_args()
    run(args.nodes, args.concurrency, args.seconds, args.procs)
