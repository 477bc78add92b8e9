"""Real processes for tests: the `tswarm` CLI and `tswarm serve` on a free loopback port.

Integration fixtures for other servers (InfluxDB, VictoriaMetrics, MicroPython) live beside
their tests and follow the same shape: start on loopback, wait until ready, stop by PID.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TSWARM = [sys.executable, "-m", "tswarm"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tswarm_env(data_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_") and k != "PORT"}
    env["TSWARM_DATA_DIR"] = str(data_dir)
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

    def __exit__(self, *exc) -> None:
        self.stop()


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
