"""Real processes for tests, the one place that starts them: the `tswarm` CLI, `tswarm serve` on a free
loopback port, InfluxDB 1.x (Debian's ``influxd``), VictoriaMetrics and PostgreSQL (Debian's
``postgresql``). The integration, fault and storage suites share them through the fixtures in
tests/conftest.py (``influxdb1``, ``influxdb1_factory``, ``victoria_metrics``, ``postgres``,
``postgres_url``, ``postgres_factory``); the MicroPython board lives in tests/firmware/board.py and follows the same shape.

Each server starts on 127.0.0.1 with free ports and a temporary data folder, waits until it answers,
and is stopped by its PID. In CI (``CI=true``) a missing binary fails the test; elsewhere it skips.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

TSWARM = [sys.executable, "-m", "tswarm"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Ports handed out by free_port, one empty file per port, shared by every process on this machine that
# runs these tests (the xdist workers of `make test`, another checkout's suite): a port the kernel
# calls free may have been handed to another worker a moment ago, for a server it has not started yet.
PORT_CLAIMS = Path(tempfile.gettempdir()) / "tswarm-test-ports"
PORT_CLAIM_S = 300.0  # a claim older than this is stale: its server has long bound the port, or gone


def _kernel_port() -> int:
    """A loopback port no socket holds right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def claim_port(port: int) -> None:
    """Renew this process's claim on ``port`` (a server restarting on its own port keeps it)."""
    PORT_CLAIMS.mkdir(exist_ok=True)
    (PORT_CLAIMS / str(port)).touch()


def free_port() -> int:
    """A free loopback port that no test process on this machine was handed in the last ``PORT_CLAIM_S``
    seconds (claimed with an exclusive create, so two parallel workers never get the same one)."""
    PORT_CLAIMS.mkdir(exist_ok=True)
    for _ in range(1000):
        port = _kernel_port()
        claim = PORT_CLAIMS / str(port)
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return port
        except FileExistsError:
            try:
                if time.time() - claim.stat().st_mtime > PORT_CLAIM_S:
                    claim.unlink()  # stale: the next draw of this port may take it
            except FileNotFoundError:
                pass
    raise RuntimeError(f"no unclaimed free port after 1000 draws: {PORT_CLAIMS} holds {len(os.listdir(PORT_CLAIMS))}")


class Engine:
    """The storage engine of the running test, which every helper here passes on: ``name`` (``sqlite``
    or ``postgres``) and, on PostgreSQL, ``database_url`` (its database). tests/conftest.py's ``engine``
    fixture sets it for each test (SQLite unless the test is marked ``engines``) and resets it after."""

    name = "sqlite"
    database_url = ""


ENGINE = Engine()


def tswarm_env(data_dir: Path, **extra: str) -> dict:
    """The environment of a `tswarm` child: none of ours (``TSWARM_*``, ``PORT``, ``DATABASE_URL``), the
    data dir, the running test's engine (``TSWARM_DATABASE_URL`` on PostgreSQL), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_") and k not in ("PORT", "DATABASE_URL")}
    env["TSWARM_DATA_DIR"] = str(data_dir)
    if ENGINE.database_url:
        env["TSWARM_DATABASE_URL"] = ENGINE.database_url
    env.update(extra)
    return env


def run_cli(data_dir: Path, *args: str, env: dict | None = None, check: bool = True, input: str | None = None):
    """Run `tswarm ARGS` as a user would; returns the CompletedProcess."""
    proc = subprocess.run(
        TSWARM + list(args), env=env or tswarm_env(data_dir), capture_output=True, text=True, input=input, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tswarm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def add_node(data_dir: Path, name: str, password: str = "pw-" + "x" * 8, env: dict | None = None) -> dict:
    """`tswarm node add` and return its svconf."""
    out = run_cli(data_dir, "node", "add", name, "--password", password, env=env).stdout
    return json.loads(out)


def basic(login: str, password: str) -> str:
    """The Authorization value exactly as the seed firmware sends it (leading space)."""
    return " Basic %s" % base64.b64encode(f"{login}:{password}".encode()).decode()


class ServiceProcess:
    """`tswarm serve` as a child process on a free loopback port."""

    def __init__(
        self, data_dir: Path, port: int | None = None, env: dict | None = None, log_path: Path | None = None,
        args: tuple[str, ...] = (),
    ):
        """``args``: more options for `tswarm serve` (``("--workers", "2")``)."""
        self.data_dir = Path(data_dir)
        self.args = tuple(args)
        self.port = port or free_port()
        self.env = env or tswarm_env(self.data_dir)
        self.log_path = log_path or self.data_dir.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ServiceProcess":
        claim_port(self.port)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            TSWARM + ["serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tswarm serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"tswarm serve did not answer /healthz within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> int | None:
        return self.kill(signal.SIGTERM)

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        ended = self.proc.poll() if self.proc is not None else None
        self.stop()
        if exc is not None and ended is not None:  # a failure the service's own end may explain
            sig = -ended
            name = signal.Signals(sig).name if sig in signal.valid_signals() else f"signal {sig}"  # never raises here
            how = f"been killed by {name}" if ended < 0 else f"exited with status {ended}"
            exc.add_note(f"tswarm serve (pid {self.proc.pid}) had {how} before the test ended; "
                         f"the end of its log:\n{self.log()[-3000:]}")


def request(method: str, url: str, body: bytes | str | None = None, headers: dict | None = None, timeout: float = 30):
    """One HTTP request with the standard library; returns (status, headers, body bytes)."""
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


# -- InfluxDB 1.x and VictoriaMetrics -------------------------------------------------------------

INFLUXD = os.environ.get("TSWARM_TEST_INFLUXD", "/usr/bin/influxd")
VICTORIA_METRICS = os.environ.get("TSWARM_TEST_VICTORIA_METRICS", "/usr/bin/victoria-metrics")


def unavailable_here(message: str):
    """What this machine cannot give a test (a server's binary, root): a failure in CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_binary(path: str, package: str) -> str:
    """The binary's path; a failure in CI, a skip elsewhere, when it is missing."""
    found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
    if found is None:
        unavailable_here(f"{path} is missing: install the Debian package '{package}' (scripts/system-deps.sh does)")
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
        claim_port(self.port)
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
        return [row for series in result.get("series", []) for row in series.get("values", [])]

    def write(self, lines: str, db: str) -> None:
        status, _, body = request("POST", f"{self.url}/write?db={db}&precision=ns", lines)
        if status != 204:
            raise AssertionError(f"write failed: {status} {body!r}")


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


# -- PostgreSQL ---------------------------------------------------------------------------------------

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's postgresql package; TSWARM_TEST_PG_BIN overrides


def require_postgres_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl`` (the newest version); a failure in CI, a skip elsewhere."""
    override = os.environ.get("TSWARM_TEST_PG_BIN")
    candidates = [Path(override)] if override else sorted(
        Path("/").glob(PG_BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    found = [p for p in candidates if os.access(p / "initdb", os.X_OK) and os.access(p / "pg_ctl", os.X_OK)]
    if not found:
        message = f"initdb and pg_ctl are missing under {override or PG_BIN_GLOB}: install the Debian package" \
                  " 'postgresql' (scripts/system-deps.sh does)"
        unavailable_here(message)
    return found[-1]


class PostgreSQL:
    """A throwaway cluster: ``initdb`` into a temporary folder, ``pg_ctl`` on a free loopback port, its
    socket in that folder too. Run as root, both run as the ``postgres`` user (``runuser``), in a
    folder it owns; stopped (``pg_ctl stop``, which signals the postmaster this started) and removed
    after. Password authentication over TCP (scram), so URLs carry a real password.

    ``fsync=off``: a test cluster that a power cut may lose (what durability costs is measured in
    benchmarks/); ``synchronous_commit`` stays on, as tswarm sets it.
    """

    USER = "postgres"
    PASSWORD = "pg-secret-Zq7"
    _names = itertools.count(1)

    def __init__(self):
        self.bin = require_postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="tswarm-pg-"))  # in /tmp: the postgres user can reach it
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(self.bin / "initdb", "-D", self.data, "-U", self.USER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8")
        pwfile.unlink()
        self.running = False

    def _run(self, *args) -> None:
        proc = subprocess.run([*self.as_postgres, *map(str, args)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
                               f"\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> "PostgreSQL":
        """Start (or start again, on the same data and port) and wait until it takes connections."""
        claim_port(self.port)
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                   " -c fsync=off -c full_page_writes=off -c max_connections=200")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60", "-o", options, "start")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """A fast shutdown (open connections are closed), or ``mode="immediate"`` (a crash: recovery
        on the next start); nothing if not running."""
        if self.running:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")
            self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
