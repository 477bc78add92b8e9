"""Crash under load: the service is SIGKILLed at random moments while 100 nodes send; every
reading it acknowledged is there afterwards, exactly once, and the journal is intact. On both
engines (``pytest.mark.engines``: SQLite in the data dir, PostgreSQL through ``TSWARM_DATABASE_URL``)."""
import collections
import os
import random
import signal
import sqlite3
import time

import pytest

from tests import conftest
from tests.servers import ENGINE, ServiceProcess, free_port, tswarm_env
from tswarm.storage import open_storage

from .load import Swarm, decode

# 12 s each by default (some 5-6 kills), so that every fault test on both engines keeps the suite
# within its time; `TSWARM_FAULT_SECONDS=600 make test-faults` for a long soak.
SECONDS = float(os.environ.get("TSWARM_FAULT_SECONDS", "12"))
PG_SECONDS = float(os.environ.get("TSWARM_FAULT_PG_SECONDS", SECONDS))
PASSWORD = "fault-password"


def seconds() -> float:
    """How long the running test's engine is put through a fault."""
    return PG_SECONDS if ENGINE.database_url else SECONDS


def register(data_dir, count, url=None):
    """``count`` nodes, created, in the journal of ``url`` (None: the running test's engine's)."""
    names = [f"n{i:03d}" for i in range(count)]
    with open_storage(data_dir, ENGINE.database_url if url is None else url) as journal:
        for name in names:
            conftest.register(journal, name, PASSWORD, created=True)
    return names


def stored_readings(data_dir, url=None):
    """Every reading in the journal (as :func:`register`'s) as a count of ``(node, seq)``; asserts no
    two share a timestamp."""
    with open_storage(data_dir, ENGINE.database_url if url is None else url) as journal:
        rows = [(ts, name, t, h) for batch in journal.iter_readings() for ts, name, t, h in batch]
    assert len({ts for ts, *_ in rows}) == len(rows), "two readings share a timestamp"
    return collections.Counter((name, decode(t, h)) for _, name, t, h in rows)


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


@pytest.mark.engines
def test_sigkill_under_load_loses_no_acknowledged_reading(tmp_path, engine):
    data_dir = tmp_path / "data"
    swarm = crash_under_load(data_dir, tswarm_env(data_dir, TSWARM_LOG_LEVEL="WARNING"), seconds())
    kills = swarm.kills
    stored = stored_readings(data_dir)
    lost = [r for r in swarm.acked if stored[r] == 0]
    duplicated = [r for r, n in stored.items() if n > 1]
    print(f"crash under load ({engine}): {kills} SIGKILLs, {swarm.tried} requests, {len(swarm.acked)} acked, "
          f"{len(lost)} lost, {len(duplicated)} duplicated, {swarm.server_errors} 5xx")
    assert kills >= 3 and len(swarm.acked) > 1000
    assert lost == [] and duplicated == []
    assert swarm.server_errors == 0
    if engine == "sqlite":
        with sqlite3.connect(data_dir / "tswarm.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
