"""`tswarm flash` with real mpremote against a device stand-in: the real MicroPython Unix port
on a pseudo-terminal (board.PtyBoard), which speaks the raw REPL and raw-paste mode mpremote
uses. No ESP board can be plugged in here; everything but the USB cable is real.
"""
from __future__ import annotations

import json

import pytest

from tswarm import bundles
from tswarm.storage import open_storage
from tswarm.settings import Config
from tswarm.svconf import local_base_url
from tests import conftest
from tests.servers import add_node, run_cli, tswarm_env

from .board import FIRMWARE, PtyBoard, boot
from .capture import RecordingRelay

pytestmark = pytest.mark.integration

WIFI = ["--wifi-ssid", "home", "--wifi-password", "home-pw", "--ip", "192.168.4.60", "--gateway", "192.168.4.1"]


def flash(service, name, port, *args, check=True, allow_loopback=True):
    """`tswarm flash` pointing the node at the test's service on loopback (the board runs on this machine)."""
    env = tswarm_env(service.data_dir, TSWARM_PUBLIC_URL=service.url, TSWARM_PORT=str(service.port))
    extra = ("--allow-loopback",) if allow_loopback else ()
    return run_cli(service.data_dir, "flash", name, "--port", port, *extra, *args, env=env, check=check)


def nodes_table(service) -> list[tuple]:
    """Every node as the journal reports it (names, password hashes, states), to compare whole."""
    with open_storage(service.data_dir) as journal:
        return conftest.nodes_table(journal)


def registered(service, name) -> bool:
    with open_storage(service.data_dir) as journal:
        return journal.is_registered(name)


def test_flash_copies_the_files_and_the_flashed_board_reports(firmware_service, tmp_path):
    with PtyBoard(tmp_path / "flash") as board:
        proc = flash(firmware_service, "flashed-1", board.port, "--password", "pw-flashed-1", *WIFI)

    code = {name: (FIRMWARE / name).read_bytes() for name in ("node.py", "main.py", "ota.py", "keep.py", "master.py")}
    version = bundles.version_of(bundles.shipped()).encode()
    config_bytes = (board.root / "config.json").read_bytes()
    url_local = json.loads(config_bytes)["svconf"]["url_local"]
    assert proc.stderr.splitlines() == [
        f"board on {board.port} answers",
        f"flashed-1 will send to {firmware_service.url}/api/nodes/flashed-1"
        + (f" (or {url_local} when that cannot be reached)" if url_local != f"{firmware_service.url}/api/nodes/flashed-1" else ""),
        f"[1/8] node.py: {len(code['node.py'])} bytes copied",
        f"[2/8] main.py: {len(code['main.py'])} bytes copied",
        f"[3/8] ota.py: {len(code['ota.py'])} bytes copied",
        f"[4/8] keep.py: {len(code['keep.py'])} bytes copied",
        f"[5/8] master.py: {len(code['master.py'])} bytes copied",  # the bundle's other file (bundles.shipped())
        f"[6/8] version: {len(version)} bytes copied",
        f"[7/8] config.json: {len(config_bytes)} bytes copied",
        "[8/8] ota.json: 15 bytes copied",
        "checked 8 files on the board (SHA-256)",
    ]
    assert proc.stdout == f"flashed flashed-1 on {board.port}; press the board's reset button to start it\n"
    assert sorted(p.name for p in board.root.iterdir()) == ["config.json", "keep.py", "main.py", "master.py", "node.py",
                                                           "ota.json", "ota.py", "version"]
    for name, content in code.items():
        assert (board.root / name).read_bytes() == content
    assert (board.root / "version").read_bytes() == version  # the bundle: node.py, ota.py, keep.py and master.py
    assert json.loads((board.root / "ota.json").read_bytes()) == {"active": ""}  # run the bundle just flashed
    url = f"{firmware_service.url}/api/nodes/flashed-1"
    assert json.loads(config_bytes) == {
        "modules": {"board": "esp8266", "sensor": "dht22", "pins": {"dht": 5},
                    "leds": {"red": 15, "green": 12, "blue": 13, "active_low": False}},
        "netconf": {"ssid": ["home"], "password": ["home-pw"], "ip": "192.168.4.60", "netmask": "255.255.255.0",
                    "gateway": "192.168.4.1", "dns": "192.168.4.1", "sleep": 300},
        "svconf": {"url": url, "url_local": url_local, "login": "flashed-1",
                   "xauth": "Zmxhc2hlZC0xOnB3LWZsYXNoZWQtMQ=="},  # base64("flashed-1:pw-flashed-1")
    }

    # The flashed board wakes: its first reading reaches the service.
    with RecordingRelay(firmware_service.port) as relay:
        config = json.loads(config_bytes)
        config["svconf"]["url"] = f"http://127.0.0.1:{relay.port}/api/nodes/flashed-1"
        (board.root / "config.json").write_text(json.dumps(config))
        result = boot(board.root, {"ssids": ["home"], "temperature": 18.3, "humidity": 52.0})
        exchanges = relay.take()
        assert [(e.method, e.status) for e in exchanges] == [("PUT", 405), ("POST", 202)]
        assert f"X-Tswarm-Firmware: {version.decode()}".encode() in exchanges[0].request
    assert result.slept == [{"ms": 300_000, "via": "esp.deepsleep"}]


def test_flash_to_a_port_that_does_not_exist_is_one_line_and_changes_nothing(firmware_service):
    proc = flash(firmware_service, "nowhere-1", "/dev/ttyUSB-tswarm-none", *WIFI, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: no such port: /dev/ttyUSB-tswarm-none (is the board plugged in? see 'ls /dev/ttyUSB* /dev/ttyACM*')\n"
    )
    assert not registered(firmware_service, "nowhere-1")


def test_flash_to_a_board_that_does_not_answer_times_out_in_one_line(firmware_service, tmp_path):
    with PtyBoard(tmp_path / "asleep", answer=False) as board:
        proc = flash(firmware_service, "asleep-1", board.port, "--timeout", "1", *WIFI, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: the board on {board.port} does not answer (waited 1 s): it may be in deep sleep; press its reset "
        "button and run this again at once, or 'tswarm halt asleep-1' and wait for its next wake\n"
    )
    assert not registered(firmware_service, "asleep-1")


def test_flash_refuses_a_loopback_url_before_touching_the_board(firmware_service, tmp_path):
    example = local_base_url(Config(port=firmware_service.port)) or f"http://192.168.1.20:{firmware_service.port}"
    before = nodes_table(firmware_service)
    with PtyBoard(tmp_path / "loopback") as board:
        proc = flash(firmware_service, "loopback-1", board.port, *WIFI, check=False, allow_loopback=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: TSWARM_PUBLIC_URL {firmware_service.url} is this machine's loopback, which a board cannot reach: set it"
        f" to the address or name nodes reach this machine at (e.g. {example}); or"
        " pass --allow-loopback for a board that runs on this machine\n"
    )
    assert list(board.root.iterdir()) == []
    assert nodes_table(firmware_service) == before


def board_that_cannot_take_main_py(root):
    """A board whose flash refuses main.py (a dangling link in its place: the open() on the board fails)."""
    root.mkdir(parents=True)
    (root / "main.py").symlink_to("/nonexistent-tswarm/main.py")
    return PtyBoard(root)


@pytest.mark.parametrize("case", ["nothing answers", "the copy fails on the board"])
def test_a_failed_flash_of_an_existing_node_changes_nothing(firmware_service, tmp_path, case):
    name = "existing-" + ("1" if case == "nothing answers" else "2")
    env = tswarm_env(firmware_service.data_dir, TSWARM_PUBLIC_URL=firmware_service.url)
    add_node(firmware_service.data_dir, name, "pw-before-flash", env=env)
    before = nodes_table(firmware_service)
    if case == "nothing answers":
        with PtyBoard(tmp_path / "asleep", answer=False) as board:
            proc = flash(firmware_service, name, board.port, "--timeout", "1", *WIFI, check=False)
        assert proc.stderr.startswith(f"Error: the board on {board.port} does not answer (waited 1 s)")
    else:
        with board_that_cannot_take_main_py(tmp_path / "broken") as board:
            proc = flash(firmware_service, name, board.port, *WIFI, check=False)
        assert proc.stderr.splitlines()[-1] == (
            f"Error: mpremote failed on {board.port}: mpremote: cp: main.py: No such file or directory."
        )
    assert proc.returncode == 1
    assert nodes_table(firmware_service) == before  # the old password still works, no node was added


def test_a_flash_with_a_firmware_file_missing_changes_nothing(firmware_service, tmp_path, monkeypatch):
    """In process (CliRunner), with firmware_dir pointed at a folder without main.py: the installed
    package's own files cannot be removed from under the other tests."""
    from click.testing import CliRunner

    from tswarm.cli import cli

    partial = tmp_path / "firmware"
    partial.mkdir()
    (partial / "node.py").write_bytes((FIRMWARE / "node.py").read_bytes())
    monkeypatch.setattr("tswarm.flash.firmware_dir", lambda: partial)
    for key, value in tswarm_env(firmware_service.data_dir, TSWARM_PUBLIC_URL=firmware_service.url).items():
        monkeypatch.setenv(key, value)
    env = tswarm_env(firmware_service.data_dir, TSWARM_PUBLIC_URL=firmware_service.url)
    add_node(firmware_service.data_dir, "existing-3", "pw-before-flash", env=env)
    before = nodes_table(firmware_service)
    with PtyBoard(tmp_path / "board") as board:
        result = CliRunner().invoke(cli, ["flash", "existing-3", "--port", board.port, "--allow-loopback", *WIFI])
        result_new = CliRunner().invoke(cli, ["flash", "brand-new-3", "--port", board.port, "--allow-loopback", *WIFI])
    for r in (result, result_new):
        assert r.exit_code == 1
        assert r.output == (f"Error: firmware file missing: {partial / 'main.py'} (this tswarm was installed without"
                            " its firmware: reinstall the package)\n")
    assert list(board.root.iterdir()) == []
    assert nodes_table(firmware_service) == before
