"""Forward: N journaled readings forwarded to the real InfluxDB 1.x (Debian's influxd) by the
forwarder's code path (`tswarm forward`, which batches, builds Points and gzips), against posting the
same line protocol, prebuilt, in the same batch sizes, gzipped, straight to /write (the baseline)."""
import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT
from export import fill
from tswarm.influx.lines import line_protocol
from tswarm.storage import open_storage
from tests.servers import InfluxDB1

BATCH = 5000


def count(influx: InfluxDB1, db: str) -> int:
    rows = influx.rows("SELECT count(temperature) FROM climate", db)
    return rows[0][1] if rows else 0


def main(readings: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "data"
        fill(data_dir, readings)
        influx = InfluxDB1(tmp / "influxdb").start()
        try:
            # Baseline: prebuilt line protocol, same batches, gzipped, POSTed one after the other.
            with open_storage(data_dir) as journal:
                bodies, after = [], 0
                while batch := journal.outbox_readings(after, BATCH, None, None):
                    bodies.append(line_protocol(batch))
                    after = batch[-1].id
            influx.query("CREATE DATABASE baseline")
            started = time.perf_counter()
            for body in bodies:
                req = urllib.request.Request(f"{influx.url}/write?db=baseline&precision=ns", data=gzip.compress(body, 1),
                                             headers={"Content-Encoding": "gzip"}, method="POST")
                urllib.request.urlopen(req, timeout=120).read()
            baseline_s = time.perf_counter() - started

            env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_")}
            env.update(TSWARM_DATA_DIR=str(data_dir), TSWARM_STORE="influxdb", TSWARM_INFLUX_API="1",
                       TSWARM_INFLUX_URL=influx.url, TSWARM_INFLUX_DB="tswarm")
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tswarm", "forward", "--since", "0"], env=env, check=True,
                           cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            forward_s = time.perf_counter() - started
            assert count(influx, "tswarm") == count(influx, "baseline") == readings
        finally:
            influx.stop()
    print(f"direct POST (baseline) {readings / baseline_s:9.0f} points/s")
    print(f"tswarm forward         {readings / forward_s:9.0f} points/s  ratio to baseline {baseline_s / forward_s:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=1_000_000)
    main(parser.parse_args().readings)
