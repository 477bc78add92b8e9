"""service/flash.py: the board's config.json, and `tswarm node config` (no board needed).
Flashing a board through mpremote is tested in tests/firmware/test_flash_device.py."""
from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

from tswarm import auth, bundles
from tswarm.flash import BoardOptions, FlashError, build_config, firmware_dir, firmware_files
from tests import conftest
from tests.servers import TSWARM, run_cli, tswarm_env

pytestmark = pytest.mark.engines  # `node config` registers the node in either engine

SVCONF = {"url": "https://t.example/api/nodes/n1", "url_local": "http://10.0.0.2:8080/api/nodes/n1",
          "login": "n1", "xauth": "bjE6cHc="}


def test_config_for_esp8266_with_static_ip_and_two_networks():
    options = BoardOptions(ssids=("home", "garage"), passwords=("pw1", ""), ip="192.168.1.50", gateway="192.168.1.1")
    assert build_config(SVCONF, options) == {
        "modules": {"board": "esp8266", "sensor": "dht22", "pins": {"dht": 5},
                    "leds": {"red": 15, "green": 12, "blue": 13, "active_low": False}},
        "netconf": {"ssid": ["home", "garage"], "password": ["pw1", ""], "ip": "192.168.1.50",
                    "netmask": "255.255.255.0", "gateway": "192.168.1.1", "dns": "192.168.1.1", "sleep": 300},
        "svconf": SVCONF,
    }


def test_config_for_esp32_with_dht11_dhcp_and_no_leds():
    options = BoardOptions(board="esp32", sensor="dht11", ssids=("home",), passwords=("pw",), sleep=600)
    assert build_config(SVCONF, options) == {
        "modules": {"board": "esp32", "sensor": "dht11", "pins": {"dht": 4}},
        "netconf": {"ssid": ["home"], "password": ["pw"], "sleep": 600},
        "svconf": SVCONF,
    }


@pytest.mark.parametrize("options, battery", [
    (BoardOptions(battery="vcc"), {"adc": "vcc"}),
    (BoardOptions(battery=0, battery_ratio=4.2), {"adc": 0, "ratio": 4.2}),
    (BoardOptions(board="esp32", battery=35, battery_ratio=2.0), {"adc": 35, "ratio": 2.0}),
])
def test_battery_options_write_what_the_firmware_reads(options, battery):
    assert build_config(SVCONF, options)["modules"]["battery"] == battery
    assert "battery" not in build_config(SVCONF, BoardOptions())["modules"]  # none unless asked


def test_config_sample_has_the_shape_build_config_makes():
    from tswarm.flash import firmware_dir

    sample = json.loads((firmware_dir() / "config_sample.json").read_text())
    built = build_config(SVCONF, BoardOptions(ssids=("a",), passwords=("b",), ip="10.0.0.5", gateway="10.0.0.1"))
    assert sample.keys() == built.keys()
    for section in sample:
        assert set(built[section]) <= set(sample[section]), section
    assert set(sample["svconf"]) == {"url", "url_local", "login", "xauth"}


@pytest.mark.parametrize("options, message", [
    (BoardOptions(ssids=("a", "b"), passwords=("x",)), "2 --wifi-ssid but 1 --wifi-password"),
    (BoardOptions(ip="192.168.1.50"), "--ip needs --gateway"),
    (BoardOptions(ip="192.168.1.500", gateway="192.168.1.1"), "--ip '192.168.1.500' is not an IPv4 address"),
    (BoardOptions(ip="300.1.1.1"), "--ip '300.1.1.1' is not an IPv4 address"),  # the value first, then --gateway
    (BoardOptions(ip="10.0.0.5", netmask="255.0.255.0", gateway="10.0.0.1"), "--netmask '255.0.255.0' is not a netmask"),
    (BoardOptions(ip="10.0.0.5", netmask="0.0.0.255", gateway="10.0.0.1"), "--netmask '0.0.0.255' is not a netmask"),
    (BoardOptions(ip="10.0.0.5", netmask="24", gateway="10.0.0.1"), "--netmask '24' is not an IPv4 address"),
    (BoardOptions(sleep=5), "--sleep must be at least 10 seconds"),
    (BoardOptions(sleep=7200), "an ESP8266 cannot deep-sleep longer than about 71 minutes"),
    (BoardOptions(board="rp2040"), "board must be one of esp8266, esp32"),
    (BoardOptions(battery=3), "an ESP8266 has one ADC pin, A0: --battery 0 (or vcc), got 3"),
    (BoardOptions(board="esp32", battery="vcc"), "--battery vcc is the ESP8266's own supply"),
    (BoardOptions(board="esp32", battery=5), "GPIO5 of an ESP32 is no ADC pin"),
    (BoardOptions(battery=0, battery_ratio=0), "--battery-ratio must be above 0"),
])
def test_bad_options_are_refused_with_what_to_fix(options, message):
    with pytest.raises(FlashError) as exc:
        build_config(SVCONF, options)
    assert str(exc.value).startswith(message)


WIFI = ("--wifi-ssid", "home", "--wifi-password", "home-pw")


def node_config(data_dir, *args, check=True, public_url="https://t.example", wifi=WIFI):
    env = tswarm_env(data_dir, TSWARM_PUBLIC_URL=public_url)
    return run_cli(data_dir, "node", "config", *args, *wifi, env=env, check=check)


def destination_line(name, url, url_local) -> str:
    line = f"{name} will send to {url}"
    if url_local != url:
        line += f" (or {url_local} when that cannot be reached)"
    return line + "\n"


def password_of(config: dict) -> str:
    return base64.b64decode(config["svconf"]["xauth"]).decode().split(":", 1)[1]


def stored_hash(data_dir, name) -> str:
    with conftest.open_journal(data_dir) as journal:
        return journal.node_auth(name).password_hash


def test_node_config_registers_a_new_node_and_prints_its_config(tmp_path):
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "shed", "--password", "pw-shed", wifi=("--wifi-ssid", "home", "--wifi-password", "x"))
    config = json.loads(proc.stdout)
    assert config["netconf"] == {"ssid": ["home"], "password": ["x"], "sleep": 300}
    url_local = config["svconf"]["url_local"]
    assert config["svconf"] == {"url": "https://t.example/api/nodes/shed", "url_local": url_local,
                                "login": "shed", "xauth": auth.xauth("shed", "pw-shed")}
    assert proc.stderr == destination_line("shed", "https://t.example/api/nodes/shed", url_local)
    assert auth.verify_password("pw-shed", stored_hash(data_dir, "shed"))


def test_node_config_for_an_existing_node_gives_it_a_new_password_and_says_so(tmp_path):
    data_dir = tmp_path / "data"
    first = json.loads(node_config(data_dir, "shed").stdout)
    proc = node_config(data_dir, "shed")
    second = json.loads(proc.stdout)

    assert proc.stderr.splitlines()[1].startswith(
        "note: node 'shed' exists and its password cannot be recovered: it now has a new one")
    assert password_of(first) != password_of(second)
    assert auth.verify_password(password_of(second), stored_hash(data_dir, "shed"))
    assert not auth.verify_password(password_of(first), stored_hash(data_dir, "shed"))


def test_node_config_with_the_password_again_keeps_the_node_working_quietly(tmp_path):
    data_dir = tmp_path / "data"
    node_config(data_dir, "shed", "--password", "same-pw")
    proc = node_config(data_dir, "shed", "--password", "same-pw")
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("shed will send to https://t.example/")
    assert auth.verify_password("same-pw", stored_hash(data_dir, "shed"))


def test_node_config_with_bad_options_changes_nothing(tmp_path):
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "shed", wifi=("--wifi-ssid", "home"), check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("Error: 1 --wifi-ssid but 0 --wifi-password: give one password per network, "
                           "in the same order ('' for an open network)\n")
    with conftest.open_journal(data_dir) as journal:
        assert not journal.is_registered("shed")


def test_node_config_without_a_network_is_refused_as_flash_is_and_registers_nothing(tmp_path):
    """A whole new config.json must join a network: the same rule, and words, as `tswarm flash`
    (a config push may leave the networks out: tests/test_cli_firmware.py)."""
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "shed2", wifi=(), check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "Error: give at least one --wifi-ssid (and its --wifi-password): the node must join a network\n"
    flashed = run_cli(data_dir, "flash", "shed2", "--port", str(tmp_path / "no-such-port"),
                      env=tswarm_env(data_dir, TSWARM_PUBLIC_URL="https://t.example"), check=False)
    assert (flashed.returncode, flashed.stderr) == (1, proc.stderr)
    assert not data_dir.exists()  # nothing registered: not even a journal made


@pytest.mark.parametrize("wifi, says", [
    (("--wifi-ssid", "", "--wifi-password", "x"), "Error: --wifi-ssid must be 1 to 32 bytes (a network name), got 0\n"),
    (("--wifi-ssid", "s" * 33, "--wifi-password", "x"), "Error: --wifi-ssid must be 1 to 32 bytes (a network name), got 33\n"),
    (("--wifi-ssid", "home", "--wifi-password", "p" * 65),
     "Error: --wifi-password must be 0 to 64 bytes (a Wi-Fi password), got 65\n"),
    (("--wifi-ssid", "home", "--wifi-password", b"pw\xff".decode("utf-8", "surrogateescape")),
     "Error: --wifi-password is not UTF-8 text\n"),  # and a password is never quoted
], ids=["empty-ssid", "long-ssid", "long-password", "password-not-utf8"])
def test_node_config_refuses_a_network_no_board_can_join_and_registers_nothing(tmp_path, wifi, says):
    """Before: written into config.json as given (a lone surrogate as "\\udcff"), the node registered."""
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "x", wifi=wifi, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", says)
    assert not data_dir.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e308", "3601"])
def test_flash_refuses_a_timeout_no_wait_can_have(tmp_path, value):
    """Before: a traceback (math.ceil of nan or inf in subprocess) or a wait of -1 s."""
    data_dir = tmp_path / "data"
    proc = run_cli(data_dir, "flash", "x", "--port", os.devnull, "--timeout", value, *WIFI,
                   env=tswarm_env(data_dir, TSWARM_PUBLIC_URL="https://t.example"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("Error: Invalid value for '--timeout': must be above 0 and at most 3600 seconds")
    assert not data_dir.exists()


@pytest.mark.engines("sqlite")
def test_node_config_refuses_a_journal_file_this_user_cannot_write_before_anything(tmp_path):
    """Before: SQLite opened it read-only without a word, and the registration at the end was a traceback
    (`tswarm flash`: after the board was flashed)."""
    from tests.test_settings import assert_one_error_line, without_root_powers

    data_dir = tmp_path / "data"
    node_config(data_dir, "shed")
    (data_dir / "tswarm.db").chmod(0o400)
    proc = subprocess.run([*without_root_powers(), *TSWARM, "node", "config", "shed", *WIFI],
                          env=tswarm_env(data_dir, TSWARM_PUBLIC_URL="https://t.example"),
                          capture_output=True, text=True, timeout=60)
    assert_one_error_line(proc, f"journal file {data_dir / 'tswarm.db'} cannot be read and written by this user")
    assert proc.stdout == ""


@pytest.mark.parametrize("args, says", [
    (["--ip", "300.1.1.1"], "Error: --ip '300.1.1.1' is not an IPv4 address like 192.168.1.50\n"),
    (["--ip", "10.0.0.5", "--gateway", "10.0.0.1", "--netmask", "255.0.255.0"],
     "Error: --netmask '255.0.255.0' is not a netmask: its ones come first, like 255.255.255.0 (/24) or 255.255.0.0 (/16)\n"),
    (["--ip", "10.0.0.5"], "Error: --ip needs --gateway (and --netmask unless it is 255.255.255.0)\n"),
], ids=["bad-ip-without-gateway", "non-contiguous-netmask", "ip-without-gateway"])
def test_node_config_checks_each_address_then_what_they_need_of_each_other(tmp_path, args, says):
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "x", *args, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", says)
    assert not data_dir.exists()


@pytest.mark.parametrize("args, says", [
    (["--dht-pin", "-3"], "Invalid value for '--dht-pin': -3 is not in the range x>=0."),
    (["--master", "--screen-sda", "-1"], "Invalid value for '--screen-sda': -1 is not in the range x>=0."),
    (["--master", "--screen-scl", "-22"], "Invalid value for '--screen-scl': -22 is not in the range x>=0."),
    (["--leds", "-1,12,13"], "Invalid value for '--leds': give three GPIO numbers R,G,B like 15,12,13, or 'none'"),
], ids=["dht-pin", "screen-sda", "screen-scl", "leds"])
def test_node_config_refuses_a_negative_gpio_as_a_usage_error(tmp_path, args, says):
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "x", *args, check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines()[-1] == f"Error: {says}" and "GPIO-" not in proc.stderr
    assert not data_dir.exists()


def example_url(port) -> str:
    """The URL the refusal suggests: this machine's LAN address and port, or a placeholder without one."""
    from tswarm.settings import Config
    from tswarm.svconf import local_base_url

    return local_base_url(Config(port=port)) or f"http://192.168.1.20:{port}"


def nodes_table(data_dir):
    with conftest.open_journal(data_dir) as journal:
        return conftest.nodes_table(journal)


@pytest.mark.parametrize("public_url", ["http://127.0.0.1:8080", "http://localhost:8080", "http://0.0.0.0:8080"])
def test_node_config_refuses_a_loopback_public_url_and_changes_nothing(tmp_path, public_url):
    data_dir = tmp_path / "data"
    node_config(data_dir, "shed", "--password", "pw-1")
    before = nodes_table(data_dir)
    proc = node_config(data_dir, "shed", public_url=public_url, check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"Error: TSWARM_PUBLIC_URL {public_url} is this machine's loopback, which a board cannot reach: set it to the "
        f"address or name nodes reach this machine at (e.g. {example_url(8080)}); or pass --allow-loopback for a "
        "board that runs on this machine\n"
    )
    assert nodes_table(data_dir) == before
    assert auth.verify_password("pw-1", stored_hash(data_dir, "shed"))


def test_node_config_with_allow_loopback_writes_the_loopback_url(tmp_path):
    data_dir = tmp_path / "data"
    proc = node_config(data_dir, "shed", "--allow-loopback", public_url="http://127.0.0.1:9000")
    assert json.loads(proc.stdout)["svconf"]["url"] == "http://127.0.0.1:9000/api/nodes/shed"
    assert stored_hash(data_dir, "shed").startswith("scrypt$")


def test_node_config_on_a_machine_without_a_lan_address_refuses_and_registers_nothing(tmp_path, monkeypatch):
    """In process (CliRunner), with the route lookup stubbed: no default route can be made here for real."""
    from click.testing import CliRunner

    from tswarm.cli import cli

    def no_route(destination=None):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr("tswarm.svconf.source_address", no_route)
    for name in [k for k in os.environ if k.startswith("TSWARM_") or k == "PORT"]:
        monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(cli, ["node", "config", "shed", "--data-dir", str(data_dir), *WIFI])
    assert result.exit_code == 1
    assert result.output == (
        "Error: this machine has no LAN address (no default route), so the node's url would be "
        "http://127.0.0.1:8080/api/nodes/shed, which a board cannot reach: set TSWARM_PUBLIC_URL to the address "
        "nodes reach this machine at (e.g. http://192.168.1.20:8080); or pass --allow-loopback for a board that "
        "runs on this machine\n"
    )
    assert not data_dir.exists()


def test_node_config_sets_the_interval_the_service_tells_the_board_to_sleep(tmp_path):
    """The 202's "sleep" wins over the board's netconf.sleep: both come from --sleep."""
    data_dir = tmp_path / "data"
    assert json.loads(node_config(data_dir, "shed", "--sleep", "900").stdout)["netconf"]["sleep"] == 900
    with conftest.open_journal(data_dir) as journal:
        assert journal.node_auth("shed").interval_s == 900
    node_config(data_dir, "shed")  # a new config.json, sleeping the default again
    with conftest.open_journal(data_dir) as journal:
        assert journal.node_auth("shed").interval_s == 300


def test_firmware_files_are_the_loader_the_shipped_bundle_its_version_the_config_and_last_the_loader_state():
    files = firmware_files('{"svconf": {}}')
    shipped = dict(bundles.shipped())
    assert [name for name, _ in files] == ["node.py", "main.py", "ota.py", "keep.py", "master.py", "version", "config.json",
                                           "ota.json"]
    assert sorted(shipped) == ["keep.py", "master.py", "node.py", "ota.py"]  # main.py, the boot loader, is never part of a bundle
    contents = dict(files)
    for name in shipped:
        assert contents[name] == shipped[name]
    assert contents["main.py"] == (firmware_dir() / "main.py").read_bytes()
    assert contents["version"] == bundles.version_of(shipped.items()).encode()
    assert json.loads(contents["ota.json"]) == {"active": ""}
    assert contents["config.json"] == b'{"svconf": {}}'


def test_a_wifi_name_with_a_character_beyond_u_ffff_reaches_the_board_as_itself(tmp_path):
    """config.json written by Python's json gave an emoji as a surrogate pair ("\\ud83c\\udfe0"), which the
    real MicroPython's json reads as the halves' bytes: the board looked for another network than the
    one named. It is written as UTF-8 now (every other character as before)."""
    import subprocess

    from tests.firmware.board import micropython_binary

    ssid = "\U0001f3e0 home caf\u00e9"
    text = node_config(tmp_path / "data", "emoji", wifi=("--wifi-ssid", ssid, "--wifi-password", "pw-12345678")).stdout
    assert json.loads(text)["netconf"]["ssid"] == [ssid]
    assert "\\ud83c" not in text and "caf\\u00e9" in text
    script = ("import json\ns = json.loads(%r.decode())['netconf']['ssid'][0]\nprint(s.encode() == %r)"
              % (text.encode(), ssid.encode()))
    out = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "True", out
