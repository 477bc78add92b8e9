"""Store-and-forward under faults, against the real InfluxDB 1.x (Debian's influxd): the service
SIGKILLed under load (on both engines: ``pytest.mark.engines``), and InfluxDB itself flapping, while 100 nodes keep
sending. Afterwards every acknowledged reading is in InfluxDB exactly once."""
import collections
import os
import random
import time

import pytest

from tests.integration.test_influx import healthz, influx1_env, wait_for
from tests.servers import ServiceProcess

from .load import Swarm, decode
from .test_crash import PASSWORD, crash_under_load, register, seconds, stored_readings

FLAP_SECONDS = float(os.environ.get("TSWARM_FAULT_FLAP_SECONDS", "18"))


def influx_readings(server, db) -> collections.Counter:
    rows = server.rows("SELECT node, temperature, humidity FROM climate", db)
    return collections.Counter((node, decode(t, h)) for _, node, t, h in rows)


def drain(data_dir, env) -> dict:
    """Start the service once more and wait until the forwarder has nothing left."""
    with ServiceProcess(data_dir, env=env) as service:
        return wait_for(lambda: (h := healthz(service))["backlog"] == 0 and h["in_flight"] == 0 and h,
                        "the backlog to drain", timeout=300)


def check(swarm, data_dir, server, db, label, extra=""):
    journal = stored_readings(data_dir)
    influx = influx_readings(server, db)
    lost = [r for r in swarm.acked if influx[r] == 0]
    missing_from_influx = [r for r in journal if influx[r] == 0]
    duplicated = [r for r, n in journal.items() if n > 1]
    print(f"{label}: {extra}{swarm.tried} requests, {len(swarm.acked)} acked, {len(lost)} lost in InfluxDB, "
          f"{len(duplicated)} duplicated, {swarm.server_errors} 5xx")
    assert len(swarm.acked) > 500
    assert lost == [] and missing_from_influx == [] and duplicated == []
    assert sum(influx.values()) == sum(journal.values())  # none twice in InfluxDB either
    assert swarm.server_errors == 0


@pytest.mark.engines
def test_sigkill_under_load_with_influxdb_every_acked_reading_reaches_influxdb(tmp_path, influxdb1_factory, engine):
    server = influxdb1_factory()
    data_dir, db = tmp_path / "data", "crash"
    env = influx1_env(data_dir, server, db, TSWARM_LOG_LEVEL="WARNING")
    swarm = crash_under_load(data_dir, env, seconds())
    drain(data_dir, env)
    check(swarm, data_dir, server, db, f"crash under load (influxdb, {engine})", f"{swarm.kills} SIGKILLs, ")


def test_influxdb_flapping_under_load_loses_nothing_and_the_backlog_drains(tmp_path, influxdb1_factory):
    server = influxdb1_factory()
    data_dir, db = tmp_path / "data", "flapping"
    env = influx1_env(data_dir, server, db, TSWARM_LOG_LEVEL="WARNING")
    names = register(data_dir, 100)
    flaps = 0
    rng = random.Random(11)
    with ServiceProcess(data_dir, env=env) as service:
        swarm = Swarm(service.url, names, PASSWORD, pause=0.05).start()
        deadline = time.monotonic() + FLAP_SECONDS
        try:
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(1, 5))
                if rng.random() < 0.5:
                    server.stop()  # down
                else:
                    server.pause()  # up but silent: writes hang until the forwarder's timeout
                flaps += 1
                time.sleep(rng.uniform(1, 5))
                if server.proc.poll() is None:
                    server.resume()
                else:
                    server.start()
        finally:
            swarm.stop()
        backlog_at_end = healthz(service)["backlog"]
        wait_for(lambda: (h := healthz(service))["backlog"] == 0 and h["in_flight"] == 0 and h,
                 "the backlog to drain", timeout=300)
    check(swarm, data_dir, server, db, "influxdb flapping",
          f"{flaps} outages in {FLAP_SECONDS:.0f} s, backlog {backlog_at_end} at the end, drained; ")
    assert flaps >= 3
