"""Ingest on PostgreSQL against ingest on SQLite, the shipped service both times, in the same run.

sqlite    : the journal in the data dir (group commit, synchronous=FULL)
postgres  : the journal in PostgreSQL (TSWARM_DATABASE_URL; group commit, synchronous_commit on),
            a throwaway cluster on loopback with fsync on (benchmarks/pg.py)
Each is measured with a new connection per request (as nodes do) and with keep-alive clients, in
several interleaved runs (sqlite, postgres, sqlite, postgres, ...), each on a fresh journal; the
median and spread of each, the ratio of each pair and the machine's load are printed.

Beside it, PostgreSQL's own limit on this machine: the very rows the service committed, in the
very groups its writer committed them (each transaction's rows, told apart by their ``xmin``),
inserted again into an empty table by one psycopg client, one commit per group; and the same rows
in one ``COPY``.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from common import Variant, load, machine_load, metric_sum, register_nodes, spread
from pg import DurablePostgreSQL

ENGINES = ("sqlite", "postgres")
TABLE = ("CREATE TABLE readings (id bigint PRIMARY KEY, node_id bigint NOT NULL, ts bigint NOT NULL,"
         " temperature double precision NOT NULL, humidity double precision NOT NULL);"
         " CREATE UNIQUE INDEX ON readings (node_id, ts); CREATE INDEX ON readings (ts)")  # as the journal's
INSERT = ("INSERT INTO readings SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[],"
          " %s::float8[])")


def newest_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0]


def committed_groups(url: str, after_id: int) -> list[list[tuple]]:
    """The readings of ``url`` after ``after_id``, one list per transaction that committed them, in
    commit order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT xmin::text, id, node_id, ts, temperature, humidity FROM readings WHERE id > %s"
                            " ORDER BY id", (after_id,)).fetchall()
    groups: list[list[tuple]] = []
    last = None
    for xmin, *row in rows:
        if xmin != last:
            groups.append([])
            last = xmin
        groups[-1].append(tuple(row))
    return groups


def client_limit(server: DurablePostgreSQL, groups: list[list[tuple]]) -> tuple[float, float]:
    """Rows/s of one psycopg client inserting ``groups`` with one commit each (synchronous_commit
    on), and of one COPY of the same rows (one commit), each into a fresh table."""
    rates = []
    for how in ("groups", "copy"):
        url = server.new_database()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TABLE)
            rows = sum(len(g) for g in groups)
            started = time.perf_counter()
            if how == "groups":
                for group in groups:
                    with conn.transaction():
                        conn.execute(INSERT, [list(column) for column in zip(*group)])
            else:
                with conn.transaction(), conn.cursor().copy("COPY readings FROM STDIN") as copy:
                    for group in groups:
                        for row in group:
                            copy.write_row(row)
            rates.append(rows / (time.perf_counter() - started))
    return rates[0], rates[1]


def measure(engine: str, server: DurablePostgreSQL, nodes: int, concurrency: int, seconds: float, procs: int,
            keepalive: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        url = server.new_database() if engine == "postgres" else ""
        names = register_nodes(data_dir, nodes, scrypt_n=2**10, database_url=url)
        with Variant(data_dir, database_url=url) as service:
            load(service.url, names, concurrency=concurrency, seconds=0, keepalive=keepalive, procs=procs, rounds=1)  # each node once: warm the credential cache
            batch_before = metric_sum(service.url, "tswarm_journal_commit_batch_size")
            after_id = newest_id(url) if url else 0  # the warm-up's readings are not replayed
            cpu_before, pg_before = service.cpu_seconds(), server.cpu_seconds()
            figures = load(service.url, names, concurrency=concurrency, seconds=seconds, keepalive=keepalive, procs=procs)
            requests = max(1, sum(figures["statuses"].values()))
            figures["server_cpu_us"] = (service.cpu_seconds() - cpu_before) / requests * 1e6
            figures["pg_cpu_us"] = (server.cpu_seconds() - pg_before) / requests * 1e6 if url else 0.0
            batch_after = metric_sum(service.url, "tswarm_journal_commit_batch_size")
        commits = batch_after[1] - batch_before[1]
        figures["mean_group"] = (batch_after[0] - batch_before[0]) / commits if commits else 0.0
        figures["groups"] = committed_groups(url, after_id) if url else None
    return figures


def run(runs: int, nodes: int, concurrency: int, seconds: float, procs: int) -> dict:
    results: dict = {}
    with DurablePostgreSQL() as server:
        print(f"PostgreSQL {server.setting('server_version')}: fsync {server.setting('fsync')},"
              f" synchronous_commit {server.setting('synchronous_commit')}", flush=True)
        for run_no in range(1, runs + 1):
            for keepalive in (False, True):
                for engine in ENGINES if run_no % 2 else reversed(ENGINES):  # interleaved, alternating who goes first
                    before = machine_load()
                    figures = measure(engine, server, nodes, concurrency, seconds, procs, keepalive)
                    results.setdefault((engine, keepalive), []).append(figures)
                    print(f"run {run_no} {engine:8} {'keep-alive' if keepalive else 'new conn.':10}"
                          f" {figures['readings_per_s']:7.0f} readings/s  p50 {figures['p50_ms']:5.1f} ms"
                          f"  p99 {figures['p99_ms']:6.1f} ms  service CPU {figures['server_cpu_us']:4.0f} µs/request"
                          f"  PostgreSQL CPU {figures['pg_cpu_us']:4.0f} µs/request  load generator CPU {figures['client_cpu_us']:4.0f} µs/request"
                          f"  group {figures['mean_group']:5.1f}  statuses {figures['statuses']}  ({before})", flush=True)
        print()
        for keepalive in (False, True):
            label = "keep-alive" if keepalive else "new connection per request"
            sqlite = [f["readings_per_s"] for f in results[("sqlite", keepalive)]]
            postgres = [f["readings_per_s"] for f in results[("postgres", keepalive)]]
            ratios = [p / s for p, s in zip(postgres, sqlite)]
            print(f"{label}: sqlite {spread(sqlite)}/s, postgres {spread(postgres)}/s;"
                  f" postgres/sqlite {spread(ratios)} per run (target ≥ 0.8)")
            groups = results[("postgres", keepalive)][-1]["groups"]
            sizes = [len(g) for g in groups]
            by_groups, by_copy = client_limit(server, groups)
            print(f"  PostgreSQL's own limit, the last run's {sum(sizes):,} rows in its {len(sizes):,} groups"
                  f" (mean {statistics.mean(sizes):.1f}, largest {max(sizes)}): one client, one commit per group"
                  f" {by_groups:,.0f} rows/s; one COPY {by_copy:,.0f} rows/s ({machine_load()})", flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each engine and connection mode")
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5, help="load per measurement")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    args = parser.parse_args()
    run(args.runs, args.nodes, args.concurrency, args.seconds, args.procs)
