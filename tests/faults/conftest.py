"""The fault suite (`make test-faults`, also part of `make test`): real processes, real signals.

Each test prints a one-line figure (readings acked, lost, duplicated; requests tried, 5xx).
The real-server fixtures (``influxdb1``, ``influxdb1_factory``, ``postgres``, ``postgres_url``,
``postgres_factory``) are tests/conftest.py's, shared with tests/integration; the servers themselves
are started by tests/servers.py.

``engine`` runs a test on both storage engines (a parameter, not a copy): SQLite in the data dir,
and a fresh database of the session's PostgreSQL cluster (``TSWARM_DATABASE_URL``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import tswarm_env


@dataclass
class Engine:
    """Where a fault test's service keeps its journal: ``url`` empty for SQLite in ``data_dir``."""

    name: str
    data_dir: Path
    url: str = ""

    def env(self, base: dict | None = None, **extra: str) -> dict:
        """``base`` (or ``tswarm_env(data_dir)``) with this engine's setting and ``extra``."""
        env = dict(base if base is not None else tswarm_env(self.data_dir))
        env.update(extra)
        if self.url:
            env["TSWARM_DATABASE_URL"] = self.url
        return env


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path) -> Engine:
    data_dir = tmp_path / "data"
    if request.param == "postgres":
        return Engine("postgres", data_dir, request.getfixturevalue("postgres_url"))
    return Engine("sqlite", data_dir)
