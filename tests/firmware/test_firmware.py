"""The real firmware (firmware/main.py + node.py) in the real MicroPython Unix port, against the
real `tswarm serve`.

The board's hardware modules (`machine`, `network`, `dht`, `esp`) are stand-ins (standins/):
no ESP8266 can run here. Everything else is real: MicroPython, its frozen micropython-lib
`requests`, the service, its journal. A recording relay (capture.py) sits between node and
service to show the exact bytes on the wire.
"""
from __future__ import annotations

import base64
import json
import subprocess
import zlib

import pytest

from tswarm import bundles
from tests.servers import IN_CI, free_port, run_cli, tswarm_env

from .board import Boot, boot, install
from .capture import RecordingRelay

pytestmark = pytest.mark.integration

PASSWORD = "shelf-for-a-year"
HOME = {"ssids": ["home"]}
FIVE_MINUTES = [{"ms": 300_000, "via": "esp.deepsleep"}]
SHIPPED = bundles.version_of(bundles.shipped())  # what `tswarm flash` writes into `version`


@pytest.fixture(scope="module")
def relay(firmware_service):
    with RecordingRelay(firmware_service.port) as relay:
        yield relay


@pytest.fixture
def make_node(firmware_service, relay, tmp_path, request):
    """``make_node(*extra_cli_args)`` -> (name, config) from the real `tswarm node config`; the
    node's url goes through the relay, url_local straight to the service (both loopback)."""
    counter = iter(range(100))

    def make(*args: str) -> tuple[str, dict]:
        name = f"{request.node.name[5:25].replace('_', '-')}-{zlib.crc32(request.node.name.encode()):08x}-{next(counter)}"
        env = tswarm_env(firmware_service.data_dir, TSWARM_PUBLIC_URL=f"http://127.0.0.1:{relay.port}")
        out = run_cli(
            firmware_service.data_dir, "node", "config", name, "--password", PASSWORD,
            "--wifi-ssid", "attic", "--wifi-password", "attic-pw", "--wifi-ssid", "home", "--wifi-password", "home-pw",
            "--ip", "192.168.4.50", "--gateway", "192.168.4.1", "--allow-loopback", *args, env=env,
        ).stdout
        config = json.loads(out)
        config["svconf"]["url_local"] = f"{firmware_service.url}/api/nodes/{name}"
        relay.take()
        return name, config

    return make


def exported(service, name: str) -> list[tuple[float, float]]:
    out = run_cli(service.data_dir, "export", "--node", name, "--format", "ndjson").stdout
    return [(row["temperature"], row["humidity"]) for row in map(json.loads, out.splitlines())]


def calls(relay: RecordingRelay) -> list[tuple[str, int]]:
    return [(e.method, e.status) for e in relay.take()]


def assert_no_traceback(result: Boot) -> None:
    assert "Traceback" not in result.output, result.output


def test_first_boot_puts_gets_405_posts_gets_202_and_sleeps_five_minutes(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    result = boot(install(tmp_path / "board", config), {**HOME, "temperature": 23.4, "humidity": 45.1})

    assert calls(relay) == [("PUT", 405), ("POST", 202)]
    assert result.slept == FIVE_MINUTES and result.returncode == 0
    assert exported(firmware_service, name) == [(23.4, 45.1)]
    assert_no_traceback(result)


def test_wake_turns_ap_off_uses_static_ip_and_tries_networks_in_order(make_node, relay, tmp_path):
    name, config = make_node()
    result = boot(install(tmp_path / "board", config), HOME)

    assert result.of("active") == [{"interface": "ap", "on": False}, {"interface": "sta", "on": True}]
    assert result.of("ifconfig") == [{"config": ["192.168.4.50", "255.255.255.0", "192.168.4.1", "192.168.4.1"]}]
    assert result.of("connect") == [{"ssid": "attic", "password": "attic-pw"}, {"ssid": "home", "password": "home-pw"}]
    # LEDs: off at start, blue while joining, green while sending, off after a 202
    rgb = [e["value"] for e in result.of("pin")]
    assert [tuple(rgb[i:i + 3]) for i in range(0, len(rgb), 3)] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 0, 0)]
    relay.take()


def test_later_boots_send_one_put_and_sleep(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    board = install(tmp_path / "board", config)
    boot(board, {**HOME, "temperature": 21.0, "humidity": 50.0})
    relay.take()

    second = boot(board, {**HOME, "temperature": -3.2, "humidity": 80.0})
    assert calls(relay) == [("PUT", 202)]
    assert second.slept == FIVE_MINUTES
    assert exported(firmware_service, name) == [(21.0, 50.0), (-3.2, 80.0)]


def test_authorization_header_is_exactly_what_the_seed_firmware_sent(make_node, relay, tmp_path):
    name, config = make_node()
    boot(install(tmp_path / "board", config), {**HOME, "temperature": 23.4, "humidity": 45.1})
    put, post = relay.take()

    xauth = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
    assert config["svconf"]["xauth"] == xauth
    # the seed's body, then what this firmware adds (docs/protocol.md): the same boot and seq in the
    # PUT and the POST (the 405 stored nothing), the RSSI of the joined network
    boot_id = json.loads(put.request.split(b"\r\n\r\n", 1)[1])["boot"]
    body = '{"name": "%s", "data": "23.4 45.1", "boot": "%s", "seq": 0, "rssi": -61}' % (name, boot_id)
    for exchange, method in ((put, "PUT"), (post, "POST")):
        head, sent_body = exchange.request.decode().split("\r\n\r\n", 1)
        request_line, *headers = head.split("\r\n")
        assert request_line == f"{method} /api/nodes/{name} HTTP/1.0"
        assert sorted(headers) == sorted([
            f"Authorization:  Basic {xauth}",  # "Authorization: " + " Basic ..." (the seed's leading space)
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            "Host: 127.0.0.1",
            f"X-Tswarm-Firmware: {SHIPPED}",  # the one header the seed's firmware did not send
        ])
        assert sent_body == body


def test_esp32_with_dht11_sends_integers_and_sleeps_with_machine_deepsleep(make_node, relay, firmware_service, tmp_path):
    name, config = make_node("--board", "esp32", "--sensor", "dht11", "--sleep", "600")
    result = boot(install(tmp_path / "board", config), {**HOME, "board": "esp32", "temperature": 19, "humidity": 61})

    sent = [json.loads(e.request.split(b"\r\n\r\n", 1)[1]) for e in relay.take()][-1]
    assert sent == {"name": name, "data": "19 61", "boot": sent["boot"], "seq": 0, "rssi": -61}
    assert result.slept == [{"ms": 600_000, "via": "machine.deepsleep"}]
    assert exported(firmware_service, name) == [(19.0, 61.0)]


def test_halted_node_gets_423_and_stays_awake_with_the_repl_answering(make_node, relay, firmware_service, tmp_path):
    """mpremote (and a person at the console) press Ctrl-C: the wait ends, the REPL is free and
    the node does not sleep."""
    name, config = make_node()
    board = install(tmp_path / "board", config)
    boot(board, HOME)
    relay.take()
    run_cli(firmware_service.data_dir, "halt", name)

    result = boot(board, {**HOME, "temperature": 22.5, "humidity": 40.0}, interrupt_after="halted:",
                  repl_input="print('awake', status)\n")
    assert calls(relay) == [("PUT", 423)]
    assert result.slept == []
    assert "tswarm: halted: awake for 600 s" in result.output
    assert "awake 423" in result.output  # main.py returned to the REPL, which runs what is typed
    assert exported(firmware_service, name)[-1] == (22.5, 40.0)  # the reading is still stored
    rgb = [e["value"] for e in result.of("pin")][-3:]
    assert rgb == [1, 0, 1]  # magenta: halted, waiting to be reflashed

    run_cli(firmware_service.data_dir, "resume", name)
    assert boot(board, HOME).slept == FIVE_MINUTES
    relay.take()


def test_halted_node_left_alone_sleeps_after_netconf_awake_seconds(make_node, relay, firmware_service, tmp_path):
    """"Stays awake" is bounded: nobody came to reflash it, so it sleeps and asks again at its next wake."""
    name, config = make_node()
    config["netconf"]["awake"] = 1
    run_cli(firmware_service.data_dir, "halt", name)
    result = boot(install(tmp_path / "board", config), HOME)

    assert calls(relay) == [("PUT", 405), ("POST", 423)]
    assert "tswarm: halted: awake for 1 s" in result.output
    assert result.slept == FIVE_MINUTES and result.returncode == 0
    assert_no_traceback(result)
    run_cli(firmware_service.data_dir, "resume", name)


def test_server_down_still_sleeps(make_node, relay, tmp_path):
    name, config = make_node()
    closed = free_port()
    config["svconf"]["url"] = f"http://127.0.0.1:{closed}/api/nodes/{name}"
    config["svconf"]["url_local"] = f"http://127.0.0.1:{closed}/api/nodes/{name}"
    result = boot(install(tmp_path / "board", config), HOME)

    assert result.slept == FIVE_MINUTES
    assert "ECONNREFUSED" in result.output or "111" in result.output
    assert relay.take() == []


def test_falls_back_to_url_local_when_url_cannot_be_reached(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    config["svconf"]["url"] = f"http://127.0.0.1:{free_port()}/api/nodes/{name}"
    result = boot(install(tmp_path / "board", config), {**HOME, "temperature": 24.1, "humidity": 39.9})

    assert result.slept == FIVE_MINUTES
    assert exported(firmware_service, name) == [(24.1, 39.9)]


def test_sensor_failing_twice_is_retried_and_the_reading_sent(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    result = boot(install(tmp_path / "board", config), {**HOME, "sensor_failures": 2, "temperature": 5.5})

    assert len(result.of("measure")) == 3
    assert result.slept == FIVE_MINUTES
    assert exported(firmware_service, name) == [(5.5, 45.0)]
    relay.take()


def test_sensor_failing_for_good_sleeps_without_joining_wifi(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    result = boot(install(tmp_path / "board", config), {**HOME, "sensor_failures": 99})

    assert len(result.of("measure")) == 3
    assert result.of("connect") == []
    assert result.slept == FIVE_MINUTES
    assert relay.take() == [] and exported(firmware_service, name) == []


def test_no_network_reachable_still_sleeps(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    result = boot(install(tmp_path / "board", config), {"ssids": ["neighbour"]})

    assert [e["ssid"] for e in result.of("connect")] == ["attic", "home"]
    assert result.slept == FIVE_MINUTES
    assert relay.take() == [] and exported(firmware_service, name) == []


def test_missing_config_still_sleeps(tmp_path):
    result = boot(install(tmp_path / "board", None), HOME)
    assert result.slept == FIVE_MINUTES
    assert "cannot read config.json" in result.output


OLD_REQUESTS = """
import sys
sys.path.insert(0, %r)
import node, requests

class Old:  # the signature of micropython-lib requests before it took a timeout
    def request(self, method, url, data=None, json=None, headers={}, stream=None):
        return requests.request(method, url, data=data, headers=headers)

sys.modules["requests"] = Old()  # what node.request imports from now on
print("status", node._send("PUT", %r, b"{}", {"Authorization": " Basic bm9ib2R5Ong="}))
"""


def test_requests_without_timeout_support_still_sends(firmware_service, relay):
    from .board import FIRMWARE, micropython_binary

    url = f"http://127.0.0.1:{relay.port}/api/nodes/nobody"
    script = OLD_REQUESTS % (str(FIRMWARE), url)
    proc = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "status 401", proc.stdout + proc.stderr
    assert calls(relay) == [("PUT", 401)]


def test_rejoining_the_saved_network_after_a_wake_calls_no_connect(make_node, relay, firmware_service, tmp_path):
    """connect() rewrites the ESP8266's saved credentials in flash; a wake that rejoins by itself skips it."""
    name, config = make_node()
    result = boot(install(tmp_path / "board", config), {**HOME, "saved": "home", "temperature": 12.5, "humidity": 70.0})

    assert result.of("connect") == []
    assert result.slept == FIVE_MINUTES
    assert exported(firmware_service, name) == [(12.5, 70.0)]
    relay.take()


# -- whatever goes wrong, the board sleeps -------------------------------------------------------

DEFAULT_SLEEP = {"esp8266": [{"ms": 300_000, "via": "esp.deepsleep"}],
                 "esp32": [{"ms": 300_000, "via": "machine.deepsleep"}]}

BROKEN_CONFIGS = {
    "missing": None,
    "not-json": "{modules: {",
    "a-list": [],
    "modules-a-string": {"modules": "dht22"},
    "leds-a-list": {"modules": {"leds": [15, 12, 13]}},
    "leds-bad-pins": {"modules": {"leds": {"red": 99, "green": "12", "blue": None}}},
    "netconf-null": {"netconf": None},
    "sleep-a-word": {"netconf": {"sleep": "soon"}},
    "sleep-negative": {"modules": {}, "netconf": {"sleep": -5}},
    "sleep-zero": {"modules": {}, "netconf": {"sleep": 0}},
    "says-esp8266": {"modules": {"board": "esp8266"}},  # sys.platform knows better than a copied config
    "says-esp32": {"modules": {"board": "esp32"}},
}


@pytest.mark.parametrize("board", ["esp8266", "esp32"])
@pytest.mark.parametrize("broken", BROKEN_CONFIGS, ids=list(BROKEN_CONFIGS))
def test_missing_or_broken_config_still_sleeps_the_default_interval(tmp_path, board, broken):
    config = BROKEN_CONFIGS[broken]
    board_dir = install(tmp_path / "board", None)
    if config is not None:
        (board_dir / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    result = boot(board_dir, {**HOME, "board": board})

    assert result.slept == DEFAULT_SLEEP[board], result.output
    assert result.returncode == 0
    assert_no_traceback(result)


def test_broken_node_py_still_sleeps(tmp_path):
    """A node.py that does not import (a bad copy, a syntax error) must not keep the board awake."""
    board = install(tmp_path / "board", None)
    (board / "node.py").write_text("def wake(config:\n")
    result = boot(board, HOME)

    assert result.slept == [{"ms": 300_000, "via": "machine.deepsleep"}]  # the ESP8266 wakes by GPIO16 too
    assert "cannot import node.py" in result.output
    assert_no_traceback(result)


def test_esp8266_sleeping_an_hour_uses_machine_deepsleep(make_node, relay, tmp_path):
    """esp.deepsleep(us) takes at most 2**31 - 1 µs (35.8 minutes); `--sleep` allows up to 4200 s."""
    name, config = make_node("--sleep", "3600")
    result = boot(install(tmp_path / "board", config), HOME)

    assert result.slept == [{"ms": 3_600_000, "via": "machine.deepsleep"}]
    assert_no_traceback(result)
    relay.take()


def test_esp8266_sleep_beyond_what_the_chip_can_is_cut_to_the_longest_it_can(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    config["netconf"]["sleep"] = 86_400  # machine.deepsleep would wrap to 20 minutes
    run_cli(firmware_service.data_dir, "node", "interval", name, "86400")  # the 202's "sleep", which wins
    result = boot(install(tmp_path / "board", config), HOME)

    assert result.slept == [{"ms": 4_294_000, "via": "machine.deepsleep"}]
    relay.take()


def test_when_deep_sleep_fails_the_board_waits_the_interval_and_resets(make_node, relay, tmp_path):
    name, config = make_node()
    config["netconf"]["sleep"] = 1  # what a node sleeps when no 202/423 tells it otherwise: no network here
    result = boot(install(tmp_path / "board", config), {"ssids": [], "deepsleep_fails": True})

    assert result.of("deepsleep_failed") == [{"via": "esp.deepsleep"}, {"via": "machine.deepsleep"}]
    assert result.events[-1] == {"event": "reset"}  # after time.sleep(1): main.py runs again, as after a wake
    assert_no_traceback(result)
    relay.take()


def test_url_that_requests_cannot_use_falls_back_to_url_local(make_node, relay, firmware_service, tmp_path):
    """Not only OSError: requests raises ValueError for a scheme it does not know, NotImplementedError
    or RuntimeError (a redirect loop) for others."""
    name, config = make_node()
    config["svconf"]["url"] = f"htp://127.0.0.1:{relay.port}/api/nodes/{name}"
    result = boot(install(tmp_path / "board", config), {**HOME, "temperature": 17.5, "humidity": 55.5})

    assert result.slept == FIVE_MINUTES
    assert exported(firmware_service, name) == [(17.5, 55.5)]
    assert relay.take() == []


# -- the seed article's config.json ----------------------------------------------------------------


def seed_config(config: dict, sensor: str) -> dict:
    """The same node as the seed article's node code configured it (and boards in the field still have)."""
    return {
        "modules": {sensor: {"desc": "temperature and humidity", "gpio": [2]}, "rgbled": {"gpio": [12, 13, 14]}},
        "netconf": {"ssid": ["attic", "home"], "password": "one-for-all", "ip": "192.168.4.50",
                    "mask": "255.255.255.0", "gateway": "192.168.4.1", "dns": "192.168.4.2"},
        "svconf": {key: config["svconf"][key] for key in ("url", "login", "xauth")},
    }


@pytest.mark.parametrize("sensor, reading, sent", [("dht11", (19, 61), (19.0, 61.0)),
                                                   ("dht22", (23.4, 45.1), (23.4, 45.1))])
def test_seed_config_json_sends_a_reading_and_sleeps(make_node, relay, firmware_service, tmp_path, sensor, reading, sent):
    name, config = make_node()
    scenario = {**HOME, "temperature": reading[0], "humidity": reading[1]}
    result = boot(install(tmp_path / "board", seed_config(config, sensor)), scenario)

    assert result.of("dht") == [{"sensor": sensor.upper(), "pin": 2}]
    assert result.of("ifconfig") == [{"config": ["192.168.4.50", "255.255.255.0", "192.168.4.1", "192.168.4.2"]}]
    assert result.of("connect") == [{"ssid": "attic", "password": "one-for-all"},
                                    {"ssid": "home", "password": "one-for-all"}]
    assert {e["pin"] for e in result.of("pin")} == {12, 13, 14}
    rgb = [e["value"] for e in result.of("pin")]
    assert [tuple(rgb[i:i + 3]) for i in range(0, len(rgb), 3)] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 0, 0)]
    assert calls(relay) == [("PUT", 405), ("POST", 202)]
    assert exported(firmware_service, name) == [sent]
    assert result.slept == FIVE_MINUTES
    assert_no_traceback(result)


def test_seed_config_json_with_dhcp_and_one_network(make_node, relay, firmware_service, tmp_path):
    name, config = make_node()
    seed = seed_config(config, "dht22")
    seed["netconf"] = {"ssid": "home", "password": "one-for-all", "ip": "", "mask": "", "gateway": "", "dns": ""}
    result = boot(install(tmp_path / "board", seed), {**HOME, "temperature": 8.5, "humidity": 90.0})

    assert result.of("ifconfig") == []
    assert result.of("connect") == [{"ssid": "home", "password": "one-for-all"}]
    assert exported(firmware_service, name) == [(8.5, 90.0)]
    relay.take()


# -- HTTPS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_relay(firmware_service, tmp_path_factory):
    """The relay speaking TLS with a self-signed certificate, as a proxy in front of tswarm would."""
    import shutil

    openssl = shutil.which("openssl")
    if not openssl:
        message = "openssl is missing (Debian package openssl)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    pem = tmp_path_factory.mktemp("tls") / "self-signed.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(pem), "-out", str(pem)], check=True, capture_output=True, timeout=60)
    with RecordingRelay(firmware_service.port, certfile=str(pem)) as relay:
        yield relay


def test_https_url_is_sent_over_tls_with_sni_and_no_certificate_check(make_node, tls_relay, firmware_service, tmp_path):
    """What micropython-lib's requests does with https:// (here with the Unix port's mbedTLS, as on
    the ESP32): TLS with the URL's host as SNI, and no check of the certificate (a self-signed
    one is taken)."""
    name, config = make_node()
    config["svconf"]["url"] = f"https://localhost:{tls_relay.port}/api/nodes/{name}"
    del config["svconf"]["url_local"]
    result = boot(install(tmp_path / "board", config), {**HOME, "temperature": 21.5, "humidity": 33.0})

    exchanges = tls_relay.take()
    assert [(e.method, e.status, e.server_name) for e in exchanges] == [("PUT", 405, "localhost"),
                                                                       ("POST", 202, "localhost")]
    assert exported(firmware_service, name) == [(21.5, 33.0)]
    assert result.slept == FIVE_MINUTES
