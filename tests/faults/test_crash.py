"""Crash under load: the service is SIGKILLed at random moments while 100 nodes send; every
reading it acknowledged is there afterwards, exactly once, and the journal is intact."""
import collections
import os
import random
import signal
import sqlite3
import time

from tests import conftest
from tests.servers import ServiceProcess, free_port, tswarm_env
from tswarm.storage import open_storage

from .load import Swarm, decode

SECONDS = float(os.environ.get("TSWARM_FAULT_SECONDS", "60"))
PASSWORD = "fault-password"


def register(data_dir, count):
    names = [f"n{i:03d}" for i in range(count)]
    with open_storage(data_dir) as journal:
        for name in names:
            conftest.register(journal, name, PASSWORD, created=True)
    return names


def stored_readings(data_dir):
    with open_storage(data_dir) as journal:
        return collections.Counter(
            (name, decode(t, h)) for batch in journal.iter_readings() for _, name, t, h in batch
        )


def crash_under_load(data_dir, env, seconds=SECONDS):
    """100 nodes send while the service is SIGKILLed at random moments and restarted; returns the swarm."""
    names = register(data_dir, 100)
    port = free_port()
    service = ServiceProcess(data_dir, port=port, env=env).start()
    swarm = Swarm(service.url, names, PASSWORD, pause=0.01).start()
    kills = 0
    rng = random.Random(7)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 4.0))
            service.kill(signal.SIGKILL)
            kills += 1
            time.sleep(rng.uniform(0.0, 0.5))
            service = ServiceProcess(data_dir, port=port, env=env, log_path=service.log_path).start()
    finally:
        swarm.stop()
        service.stop()
    swarm.kills = kills
    return swarm


def test_sigkill_under_load_loses_no_acknowledged_reading(tmp_path):
    data_dir = tmp_path / "data"
    swarm = crash_under_load(data_dir, tswarm_env(data_dir, TSWARM_LOG_LEVEL="WARNING"))
    kills = swarm.kills
    stored = stored_readings(data_dir)
    lost = [r for r in swarm.acked if stored[r] == 0]
    duplicated = [r for r, n in stored.items() if n > 1]
    print(f"crash under load: {kills} SIGKILLs, {swarm.tried} requests, {len(swarm.acked)} acked, "
          f"{len(lost)} lost, {len(duplicated)} duplicated, {swarm.server_errors} 5xx")
    assert kills >= 3 and len(swarm.acked) > 1000
    assert lost == [] and duplicated == []
    assert swarm.server_errors == 0
    with sqlite3.connect(data_dir / "tswarm.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
