"""Real servers for integration tests: InfluxDB 1.x (Debian's ``influxd``) and VictoriaMetrics.

Each is started by the tests on 127.0.0.1 with free ports and a temporary data folder, and
stopped by its PID. In CI (``CI=true``) a missing binary fails the test; elsewhere it skips.

Fixtures:

- ``influxdb1``: one ``influxd`` for the whole session. Tests share it, so each uses its own
  database (``influxdb1.new_database()``). ``.url``, ``.query(q, db=...)``, ``.write(lines, db=...)``.
- ``influxdb1_factory``: ``influxdb1_factory(**data_settings)`` starts a private ``influxd`` (for
  tests that stop, pause or reconfigure it); stopped after the test.
- ``victoria_metrics``: one ``victoria-metrics`` for the session; ``.url``, ``.export(match)``.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.servers import IN_CI, free_port, request

INFLUXD = os.environ.get("TSWARM_TEST_INFLUXD", "/usr/bin/influxd")
VICTORIA_METRICS = os.environ.get("TSWARM_TEST_VICTORIA_METRICS", "/usr/bin/victoria-metrics")


def require_binary(path: str, package: str) -> str:
    """The binary's path; a failure in CI, a skip elsewhere, when it is missing."""
    found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
    if found is None:
        message = f"{path} is missing: install the Debian package '{package}' (scripts/system-deps.sh does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            status, _, _ = request("GET", url, timeout=1)
            if status in (200, 204):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log.read_text(errors='replace')}")


class ServerProcess:
    """A child process we started, stopped by PID only."""

    proc: subprocess.Popen | None = None

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # in case a test paused it
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


class InfluxDB1(ServerProcess):
    """``influxd`` 1.x with a temporary config: HTTP and RPC on free loopback ports, no reporting."""

    _names = itertools.count(1)

    def __init__(self, root: Path, **data_settings):
        self.binary = require_binary(INFLUXD, "influxdb")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.rpc_port = free_port()
        data_extra = "".join(f"  {key} = {json.dumps(value)}\n" for key, value in data_settings.items())
        self.config_path = self.root / "influxdb.conf"
        self.config_path.write_text(
            "reporting-enabled = false\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.root}/meta"\n'
            f'[data]\n  dir = "{self.root}/data"\n  wal-dir = "{self.root}/wal"\n  query-log-enabled = false\n'
            + data_extra
            + "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[continuous_queries]\n  enabled = false\n"
            '[logging]\n  level = "warn"\n  suppress-logo = true\n'
        )
        self.log_path = self.root / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "InfluxDB1":
        """Start (or start again, on the same data) and wait for /ping."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "run", "-config", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_until_up(self.proc, self.url + "/ping", self.log_path)
        return self

    def new_database(self) -> str:
        """A fresh database name (not created: the service creates it, or call ``query``)."""
        return f"t{os.getpid()}_{next(self._names)}"

    def query(self, q: str, db: str | None = None) -> list[dict]:
        """Run InfluxQL; returns the statement results (``[{"series": [...]}]``), timestamps in ns."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        status, _, body = request("POST", self.url + "/query", urllib.parse.urlencode(params),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        data = json.loads(body)
        if status != 200 or "error" in data or any("error" in r for r in data.get("results", [])):
            raise AssertionError(f"InfluxQL {q!r} failed: {status} {body!r}")
        return data["results"]

    def rows(self, q: str, db: str) -> list[list]:
        """The values of every series of the first result, one list per row."""
        result = self.query(q, db)[0]
        return [row for series in result.get("series", []) for row in series["values"]]

    def write(self, lines: str, db: str) -> None:
        status, _, body = request("POST", f"{self.url}/write?db={db}&precision=ns", lines)
        if status != 204:
            raise AssertionError(f"write failed: {status} {body!r}")


@pytest.fixture(scope="session")
def influxdb1(tmp_path_factory):
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb1")).start()
    yield server
    server.stop()


@pytest.fixture
def influxdb1_factory(tmp_path):
    servers = []

    def start(**data_settings) -> InfluxDB1:
        server = InfluxDB1(tmp_path / f"influxdb1-{len(servers)}", **data_settings)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


class VictoriaMetrics(ServerProcess):
    """``victoria-metrics`` on a free loopback port. It takes InfluxDB line protocol on
    ``/api/v2/write`` and names each field's series ``<measurement>_<field>`` (tags become labels);
    it keeps millisecond timestamps."""

    def __init__(self, root: Path):
        self.binary = require_binary(VICTORIA_METRICS, "victoria-metrics")
        self.root = Path(root)
        self.port = free_port()
        self.log_path = self.root / "victoria-metrics.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "VictoriaMetrics":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.root / 'data'}",
                 "-loggerLevel=WARN", "-search.latencyOffset=0s"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        _wait_until_up(self.proc, self.url + "/health", self.log_path)
        return self

    def export(self, match: str) -> list[dict]:
        """``/api/v1/export`` for a series selector: one dict per series (metric, values, timestamps)."""
        request("GET", self.url + "/internal/force_flush")
        status, _, body = request("POST", self.url + "/api/v1/export", urllib.parse.urlencode({"match[]": match}),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory):
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics")).start()
    yield server
    server.stop()
