"""The wheel of this checkout, installed into a fresh virtual environment outside it, works from any folder.

Once per session: `pip wheel --no-deps` builds the wheel (from a copy of the checkout), `python -m venv` makes a venv without the
system's or this test venv's packages, and pip installs the wheel there (its dependencies from the
package index pip is configured with). Every command then runs from an empty folder that is not the
checkout, with nothing of the checkout on the path, as a user's would: `tswarm flash` against the real
MicroPython Unix port on a pty (tests/firmware/board.py), `node config`, `serve` and its status page,
`grafana provision` (against the recorded contract of Grafana's API in tests/test_grafana_provision.py:
no Grafana server exists here), and `python -m tswarm`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tswarm import auth, bundles, grafana_dashboards
from tswarm.storage import open_storage
from tests.firmware.board import PtyBoard
from tests.servers import free_port, request
from tests.test_grafana_provision import TOKEN, FakeGrafana

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
PUBLIC_URL = "http://192.168.1.20:8080"  # any address a board could reach; nothing listens there
WIFI = ["--wifi-ssid", "home", "--wifi-password", "home-pw"]


@dataclass
class Installed:
    venv: Path
    cwd: Path  # an empty folder outside the checkout; the default data dir ./data lands here

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def package(self) -> Path:
        """The installed tswarm package folder in the venv's site-packages."""
        out = self.run([str(self.python), "-c", "import tswarm, os; print(os.path.dirname(tswarm.__file__))"])
        return Path(out.stdout.strip())

    @property
    def data_dir(self) -> Path:
        return self.cwd / "data"

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TSWARM_") and k not in ("PORT", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def run(self, args, check=True, **extra_env) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(a) for a in args], cwd=self.cwd, env=self.env(**extra_env), capture_output=True,
                              text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def tswarm(self, *args, check=True, **extra_env) -> subprocess.CompletedProcess:
        return self.run([self.venv / "bin" / "tswarm", *args], check=check, **extra_env)


def setup_step(args, cwd) -> str:
    """Run one setup command; its output (stdout and stderr)."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools' build/ folder in the checkout could carry stale files into the wheel.
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "data", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    build_log = setup_step([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", root / "dist", source],
                           cwd=root)
    (wheel,) = (root / "dist").glob("tswarm-*.whl")
    setup_step([sys.executable, "-m", "venv", root / "venv"], cwd=root)
    setup_step([root / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], cwd=root)
    cwd = root / "elsewhere"
    cwd.mkdir()
    installed = Installed(root / "venv", cwd)
    installed.build_log = build_log
    return installed


def test_the_wheel_builds_without_a_setuptools_warning(installed):
    """setuptools warns through Python's warnings (``BuildBackendWarning: ...``, ``SetuptoolsDeprecationWarning``);
    pip's own ``WARNING:`` lines about this machine's package index are not the project's."""
    assert not re.findall(r"\w+Warning\b", installed.build_log), installed.build_log


def test_the_installed_tswarm_is_the_venvs_own_and_not_the_checkouts(installed):
    package = installed.package
    assert package.is_relative_to(installed.venv) and not package.is_relative_to(ROOT)
    assert installed.run([installed.python, "-c", "import service"], check=False).returncode == 1  # no generic name
    help_text = installed.run([installed.python, "-m", "tswarm", "--help"]).stdout
    assert help_text.startswith("Usage: python -m tswarm [OPTIONS] COMMAND [ARGS]...") or \
        help_text.startswith("Usage: tswarm [OPTIONS] COMMAND [ARGS]...")
    assert "flash" in help_text and "grafana" in help_text


def test_the_installed_package_carries_the_firmware_and_the_page(installed):
    package = installed.package
    for name in ("node.py", "main.py", "ota.py", "keep.py", "master.py", "config_sample.json"):
        assert (package / "firmware" / name).read_bytes() == (ROOT / "firmware" / name).read_bytes(), name
    shipped = sorted(p.relative_to(ROOT / "service" / "static").as_posix()
                     for p in (ROOT / "service" / "static").rglob("*") if p.is_file())
    installed_files = sorted(p.relative_to(package / "static").as_posix()
                             for p in (package / "static").rglob("*") if p.is_file())
    assert installed_files == shipped


def test_flash_from_the_installed_wheel_puts_the_shipped_firmware_on_the_board(installed, tmp_path):
    with PtyBoard(tmp_path / "board") as board:
        proc = installed.tswarm("flash", "wheel-1", "--port", board.port, "--password", "pw-wheel-1", *WIFI,
                                TSWARM_PUBLIC_URL=PUBLIC_URL)
    assert proc.stdout == f"flashed wheel-1 on {board.port}; press the board's reset button to start it\n"
    assert proc.stderr.splitlines()[-1] == "checked 8 files on the board (SHA-256)"
    assert sorted(p.name for p in board.root.iterdir()) == ["config.json", "keep.py", "main.py", "master.py", "node.py",
                                                           "ota.json", "ota.py", "version"]
    assert (board.root / "version").read_text() == bundles.version_of(
        (name, (installed.package / "firmware" / name).read_bytes()) for name in ("keep.py", "master.py", "node.py", "ota.py"))
    assert json.loads((board.root / "ota.json").read_text()) == {"active": ""}
    for name in ("node.py", "main.py", "ota.py"):
        shipped = (installed.package / "firmware" / name).read_bytes()
        assert (board.root / name).read_bytes() == shipped == (ROOT / "firmware" / name).read_bytes(), name
    config = json.loads((board.root / "config.json").read_text())
    assert config["svconf"]["url"] == f"{PUBLIC_URL}/api/nodes/wheel-1"
    assert config["svconf"]["xauth"] == auth.xauth("wheel-1", "pw-wheel-1")
    with open_storage(installed.data_dir) as journal:  # ./data of the folder it ran in
        assert auth.verify_password("pw-wheel-1", journal.node_auth("wheel-1").password_hash)


def test_node_config_from_the_installed_wheel(installed):
    proc = installed.tswarm("node", "config", "wheel-2", "--password", "pw-wheel-2", *WIFI, "--board", "esp32",
                            TSWARM_PUBLIC_URL=PUBLIC_URL)
    config = json.loads(proc.stdout)
    assert config["modules"] == {"board": "esp32", "sensor": "dht22", "pins": {"dht": 4}}
    assert config["svconf"]["url"] == f"{PUBLIC_URL}/api/nodes/wheel-2"
    with open_storage(installed.data_dir) as journal:
        assert journal.is_registered("wheel-2")


def test_serve_from_the_installed_wheel_serves_the_status_page_and_its_files(installed):
    port = free_port()
    log = open(installed.cwd / f"serve-{port}.log", "wb")
    proc = subprocess.Popen([installed.venv / "bin" / "tswarm", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=installed.cwd, env=installed.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            assert proc.poll() is None, (installed.cwd / f"serve-{port}.log").read_text()
            try:
                if request("GET", url + "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        status, headers, page = request("GET", url + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"<title>tswarm</title>" in page
        static = re.findall(r'(?:src|href)="/?static/([^"?#]+)', page.decode())
        assert {"app.js", "style.css"} <= set(static) and any(s.startswith("vendor/uplot/") for s in static)
        for name in static:
            status, _, body = request("GET", f"{url}/static/{name}")
            assert status == 200, name
            assert body == (installed.package / "static" / name).read_bytes(), name
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_grafana_provision_from_the_installed_wheel(installed):
    with FakeGrafana() as grafana:
        proc = installed.tswarm("grafana", "provision", "--url", grafana.url, "--token", TOKEN,
                                "--influx-url", "http://influxdb:8086", TSWARM_INFLUX_API="1")
        assert proc.stdout.splitlines()[-1] == "6 change(s)"
        saved = {uid: d["dashboard"] for uid, d in grafana.dashboards.items()}
        rules = sorted(grafana.alert_rules)
    wanted = {d["uid"]: d for d in (grafana_dashboards.overview(), grafana_dashboards.node())}
    assert saved.keys() == wanted.keys()
    for uid, dashboard in saved.items():
        assert {k: v for k, v in dashboard.items() if k not in ("id", "version")} == \
            {k: v for k, v in wanted[uid].items() if k not in ("id", "version")}
    assert rules == ["tswarm-battery-low", "tswarm-node-silent"]  # the alert rules too (service/grafana_alerts.py)


def test_firmware_push_from_the_installed_wheel_stages_the_shipped_bundle(installed):
    """What `tswarm flash` wrote as the board's version is the version `tswarm firmware push` stages:
    a board flashed from this wheel is offered nothing until the firmware changes."""
    installed.tswarm("node", "add", "wheel-ota", "--password", "pw-wheel-ota")
    proc = installed.tswarm("firmware", "push", "--node", "wheel-ota")
    shipped = [(name, (installed.package / "firmware" / name).read_bytes())
               for name in ("keep.py", "master.py", "node.py", "ota.py")]
    assert proc.stdout.splitlines()[0].startswith(f"bundle {bundles.version_of(shipped)}: 4 file(s)")
    status = json.loads(installed.tswarm("firmware", "status", "--json").stdout)
    assert [(s["node"], s["staged"], s["outcome"]) for s in status if s["node"] == "wheel-ota"] == [
        ("wheel-ota", bundles.version_of(shipped), "pending")]
