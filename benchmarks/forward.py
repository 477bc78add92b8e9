"""Forward: N journaled readings forwarded to the real InfluxDB 1.x (Debian's influxd, as the tests
start it) by the forwarder's code path (`tswarm forward`, the whole command: start-up, count, batches,
line protocol, gzip), against posting the same line protocol, prebuilt, in the same batch sizes,
gzipped, straight to /write one batch after the other (the baseline: what InfluxDB takes at most).

`--rounds R` interleaved rounds against the same InfluxDB, each into databases of its own (dropped
after the round): the baseline and `tswarm forward`, the order swapped every other round so neither
always follows the other's compactions. Reports each round's rates and ratio, the CPU per point of
influxd and of the client (the baseline's own process; `tswarm forward` as a child, from its rusage),
the spread over the rounds (median, min–max), and the load average before and after: the machine
may be shared, and on two cores every CPU second the client takes is one influxd may miss.
"""
import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, spread
from export import fill
from tswarm.influx.lines import line_protocol
from tswarm.storage import open_storage
from tests.servers import InfluxDB1

BATCH = 5000  # TSWARM_FORWARD_BATCH's default
TARGET = 0.8


def count(influx: InfluxDB1, db: str) -> int:
    rows = influx.rows("SELECT count(temperature) FROM climate", db)
    return rows[0][1] if rows else 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_post(influx: InfluxDB1, db: str, bodies: list[bytes]) -> tuple[float, float]:
    """Seconds to gzip and POST the prebuilt ``bodies`` one after the other (the baseline), and the
    CPU seconds this process took meanwhile."""
    influx.query(f"CREATE DATABASE {db}")
    started, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        req = urllib.request.Request(f"{influx.url}/write?db={db}&precision=ns", data=gzip.compress(body, 1),
                                     headers={"Content-Encoding": "gzip"}, method="POST")
        urllib.request.urlopen(req, timeout=120).read()
    return time.perf_counter() - started, time.process_time() - cpu


def tswarm_forward(influx: InfluxDB1, db: str, data_dir: Path) -> tuple[float, float]:
    """Seconds `tswarm forward --since 0` takes, from the command's start to its exit, and its CPU seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_")}
    env.update(TSWARM_DATA_DIR=str(data_dir), TSWARM_STORE="influxdb", TSWARM_INFLUX_API="1",
               TSWARM_INFLUX_URL=influx.url, TSWARM_INFLUX_DB=db)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "tswarm", "forward", "--since", "0"], env=env,
                             cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, f"tswarm forward exited {child.returncode}"
    return elapsed, usage.ru_utime + usage.ru_stime


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main(readings: int, rounds: int) -> None:
    print(f"{readings:,} readings, {rounds} interleaved rounds; before: {load()}", flush=True)
    baseline_rates, forward_rates, ratios = [], [], []
    cpu: dict[str, list[tuple[float, float]]] = {"direct": [], "forward": []}  # (influxd, client) µs per point
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "data"
        fill(data_dir, readings)
        with open_storage(data_dir) as journal:  # the baseline's bodies, built once, outside its timing
            bodies, after = [], 0
            while batch := journal.outbox_readings(after, BATCH, None, None):
                bodies.append(line_protocol(batch))
                after = batch[-1].id
        influx = InfluxDB1(tmp / "influxdb").start()
        try:
            for r in range(1, rounds + 1):
                times = {}
                order = ["direct", "forward"] if r % 2 else ["forward", "direct"]
                for which in order:
                    db = f"{which}{r}"
                    influxd_cpu = cpu_seconds(influx.proc.pid)
                    times[which], client_cpu = (direct_post(influx, db, bodies) if which == "direct"
                                                else tswarm_forward(influx, db, data_dir))
                    influxd_cpu = cpu_seconds(influx.proc.pid) - influxd_cpu
                    cpu[which].append((influxd_cpu * 1e6 / readings, client_cpu * 1e6 / readings))
                    assert count(influx, db) == readings, (which, count(influx, db))
                    influx.query(f"DROP DATABASE {db}")
                ratio = times["direct"] / times["forward"]
                baseline_rates.append(readings / times["direct"])
                forward_rates.append(readings / times["forward"])
                ratios.append(ratio)
                print(f"round {r} ({' then '.join(order)}): direct POST {baseline_rates[-1]:9,.0f} points/s"
                      f" (CPU/point: influxd {cpu['direct'][-1][0]:.2f} µs, client {cpu['direct'][-1][1]:.2f} µs),"
                      f" tswarm forward {forward_rates[-1]:9,.0f} points/s"
                      f" (influxd {cpu['forward'][-1][0]:.2f} µs, tswarm {cpu['forward'][-1][1]:.2f} µs),"
                      f" ratio {ratio:.2f} ({'met' if ratio >= TARGET else 'NOT met'}); {load()}", flush=True)
        finally:
            influx.stop()
    print(f"\nover {rounds} rounds, median (min–max):")
    print(f"direct POST (baseline) {spread(baseline_rates)} points/s")
    print(f"tswarm forward         {spread(forward_rates)} points/s")
    for which, label in (("direct", "direct POST"), ("forward", "tswarm forward")):
        print(f"CPU per point, {label + ':':16} influxd {spread([c[0] for c in cpu[which]])} µs,"
              f" client {spread([c[1] for c in cpu[which]])} µs")
    print(f"ratio                  {spread(ratios)}; target {TARGET}: met in {sum(x >= TARGET for x in ratios)} of {rounds} rounds")
    print(f"after: {load()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    main(args.readings, args.rounds)
