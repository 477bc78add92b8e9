"""Nodes always sleep, whatever a hostile network or a flaky board does: the real firmware in the
real MicroPython Unix port (its frozen micropython-lib `requests`) against scripted peers (peer.py)
that answer garbage, a status line alone, an endless header, a reset, odd JSON, and against the real
`tswarm serve` for what the firmware must never send: a malformed request, or a body the service
refuses for good (the board would drop the reading), and for the exact bytes docs/protocol.md shows.

Each wake must end in deep sleep (or the bounded 423 wait) without a traceback, keep in RTC memory
every reading that was not answered 202/423, and send only well-formed requests.
"""
from __future__ import annotations

import json
import re
import socket
import struct
from pathlib import Path

import pytest

from tests.servers import run_cli

from .board import STANDINS, boot, install, rtc_path
from .capture import RecordingRelay, node_config
from .peer import FAST, FIVE_MINUTES, HOME, STORED, Peer, Trickle, assert_clean, config, http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def kept(board: Path) -> int:
    """How many readings the board's RTC memory keeps (keep.py: a 26-byte header, 15 bytes each)."""
    path = rtc_path(board)
    return (path.stat().st_size - 26) // 15 if path.exists() and path.stat().st_size >= 26 else 0


def well_formed(requests) -> bool:
    return all(r.method in ("PUT", "POST") and r.path == "/api/nodes/kitchen" and "name" in r.json() for r in requests)


# -- against the real service ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay(firmware_service):
    with RecordingRelay(firmware_service.port) as relay:
        yield relay


def make_node(service, relay, request, board: str = "esp8266") -> tuple[str, dict]:
    name, cfg = node_config(service, relay, request, "hostile-networks", board)
    cfg["svconf"].pop("url_local", None)  # the service's LAN address, past the relay: only where a test sets it
    return name, cfg


def stored(service, name: str) -> list[float]:
    out = run_cli(service.data_dir, "export", "--node", name, "--format", "ndjson").stdout
    return [json.loads(line)["temperature"] for line in out.splitlines()]


def bodies(relay) -> list[tuple[int, dict]]:
    return [(e.status, json.loads(e.request.split(b"\r\n\r\n", 1)[1])) for e in relay.take()]


@pytest.mark.parametrize("key, damage", [
    ("url", " x"),  # "PUT /api/nodes/NAME x HTTP/1.0": before, a 400 bad_request, the reading dropped for good
    ("url", "\r\nX-Evil: 1"),  # a request line without its version (400) and a header of the config's own
    ("url", "\u00fc"),  # raw UTF-8 in the request line
    ("xauth", "\r\nX-Evil: 1"),  # a header line of the config's own
    ("xauth", "\u00fc"),
], ids=["url-space", "url-crlf", "url-non-ascii", "xauth-crlf", "xauth-non-ascii"])
def test_a_url_or_xauth_that_would_make_a_malformed_request_is_not_sent_and_the_reading_waits(
        firmware_service, relay, request, tmp_path, key, damage):
    name, cfg = make_node(firmware_service, relay, request)
    board = install(tmp_path / "board", cfg)
    boot(board, {**HOME, "temperature": 21.0})  # the node is created
    relay.take()
    broken = json.loads(json.dumps(cfg))
    broken["svconf"][key] += damage
    (board / "config.json").write_text(json.dumps(broken))
    result = boot(board, {**HOME, "temperature": 22.0})
    assert_clean(result)
    assert result.slept == FIVE_MINUTES["esp8266"], result.output
    assert relay.take() == [] and "not plain ASCII: not sent" in result.output
    assert kept(board) == 1
    (board / "config.json").write_text(json.dumps(cfg))  # repaired (a reflash keeps RTC memory)
    boot(board, {**HOME, "temperature": 23.0})
    assert [(s, b["data"], "age" in b) for s, b in bodies(relay)] == [(202, "22.0 45.0", True), (202, "23.0 45.0", False)]
    assert sorted(stored(firmware_service, name)) == [21.0, 22.0, 23.0]  # the kept one 300 s back (its age)


def test_a_url_that_cannot_be_sent_falls_back_to_url_local(firmware_service, relay, request, tmp_path):
    name, cfg = make_node(firmware_service, relay, request)
    cfg["svconf"]["url"] += " x"
    cfg["svconf"]["url_local"] = f"{firmware_service.url}/api/nodes/{name}"  # straight to the service
    result = boot(install(tmp_path / "board", cfg), {**HOME, "temperature": 19.0})
    assert_clean(result)
    assert "- trying " + cfg["svconf"]["url_local"] in result.output
    assert result.slept == FIVE_MINUTES["esp8266"]
    assert relay.take() == [] and stored(firmware_service, name) == [19.0]


@pytest.mark.parametrize("login", [5, None, ["x"], "kit chen", ""], ids=["a-number", "null", "a-list", "a-space", "empty"])
def test_a_login_that_is_no_name_sends_nothing_and_the_reading_waits(firmware_service, relay, request, tmp_path, login):
    """The body's name: {"name": 5} or null was a 400 (bad_name), which the board takes as a reading
    refused for good, and dropped it; every reading of the board went so until it was reflashed."""
    name, cfg = make_node(firmware_service, relay, request)
    broken = json.loads(json.dumps(cfg))
    broken["svconf"]["login"] = login
    board = install(tmp_path / "board", broken)
    result = boot(board, {**HOME, "temperature": 18.0})
    assert_clean(result)
    assert "svconf.login" in result.output and result.slept == FIVE_MINUTES["esp8266"]
    assert result.of("connect") == []  # no Wi-Fi joined for a wake that cannot send
    assert relay.take() == [] and kept(board) == 1
    (board / "config.json").write_text(json.dumps(cfg))
    boot(board, {**HOME, "temperature": 18.5})
    assert [(s, b["data"]) for s, b in bodies(relay)] == [(405, "18.0 45.0"), (202, "18.0 45.0"), (202, "18.5 45.0")]
    assert sorted(stored(firmware_service, name)) == [18.0, 18.5]


# The stand-in network module with the ESP32 port's WLAN.connect(), which raises what its SDK refuses
# (esp_exceptions: OSError "Wifi Internal Error", a password the SDK will not take) for the networks the
# scenario's "refuses" lists. Written to the board's flash, which comes first on the boot loader's path.
NETWORK_REFUSING = """
exec(open(%r).read())
_connect = WLAN.connect


def _refusing(self, ssid, password=""):
    if ssid in scenario.get("refuses", ()):
        record("connect", ssid=ssid, password=password)
        raise OSError("Wifi Internal Error")
    _connect(self, ssid, password)


WLAN.connect = _refusing
"""


def test_a_network_whose_connect_raises_gives_way_to_the_next(firmware_service, relay, request, tmp_path):
    """Before, the first network's OSError ended the wake: the board never tried the second one."""
    name, cfg = make_node(firmware_service, relay, request, "esp32")
    board = install(tmp_path / "board", cfg)
    (board / "network.py").write_text(NETWORK_REFUSING % str(STANDINS / "network.py"))
    result = boot(board, {"ssids": ["attic", "home"], "refuses": ["attic"], "board": "esp32", "temperature": 16.5})
    assert_clean(result)
    assert [e["ssid"] for e in result.of("connect")] == ["attic", "home"]
    assert "could not join attic OSError('Wifi Internal Error'" in result.output
    assert result.slept == FIVE_MINUTES["esp32"]
    assert stored(firmware_service, name) == [16.5]
    relay.take()


def doc_request() -> tuple[str, list[str], str]:
    """docs/protocol.md's example request: (request line, header lines, body)."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    block = text.split("\n## Request\n", 1)[1].split("```", 2)[1].strip("\n")
    head, body = block.split("\n\n", 1)
    line, *headers = head.split("\n")
    return line, headers, body


def doc_telemetry_keys() -> list[str]:
    text = (ROOT / "docs" / "protocol.md").read_text()
    block = text.split("\n## Telemetry, kept readings", 1)[1].split("```", 2)[1]
    return list(json.loads(block))


def test_what_the_board_sends_is_docs_protocol_md_byte_for_byte(firmware_service, relay, request, tmp_path):
    """PUT first, the same request as a POST after the 405, then a PUT; each request line and header
    as docs/protocol.md shows them (with this node's name, credentials and host), plus the one header
    of newer firmware; the body the doc's, then the optional fields in the doc's order and form."""
    name, cfg = make_node(firmware_service, relay, request)
    cfg["modules"]["battery"] = {"adc": "vcc"}
    board = install(tmp_path / "board", cfg)
    line, headers, body = doc_request()
    assert json.loads(body) == {"name": "kitchen", "data": "23.4 45.1"}
    xauth = cfg["svconf"]["xauth"]

    def expected(method: str, sent_body: str) -> tuple[str, list[str]]:
        want = [h.replace("a2l0Y2hlbjpzZWNyZXQ=", xauth).replace("tswarm.example.org", "127.0.0.1") for h in headers]
        want = [f"Content-Length: {len(sent_body.encode())}" if h.startswith("Content-Length:") else h for h in want]
        return line.replace("PUT", method).replace("kitchen", name), sorted(want + [f"X-Tswarm-Firmware: {version}"])

    version = (board / "version").read_text()
    boot(board, {**HOME, "temperature": 23.4, "humidity": 45.1, "vcc": 3.3})
    dead = json.loads(json.dumps(cfg))
    dead["svconf"]["url"] = "http://127.0.0.1:9/api/nodes/" + name  # nothing listens: the reading is kept
    (board / "config.json").write_text(json.dumps(dead))
    boot(board, {**HOME, "temperature": 23.4, "humidity": 45.1, "vcc": 3.3})
    (board / "config.json").write_text(json.dumps(cfg))
    boot(board, {**HOME, "temperature": 23.4, "humidity": 45.1, "vcc": 3.3})
    exchanges = relay.take()
    assert [(e.method, e.status) for e in exchanges] == [("PUT", 405), ("POST", 202), ("PUT", 202), ("PUT", 202)]
    order = doc_telemetry_keys()
    for exchange in exchanges:
        head, sent = exchange.request.decode().split("\r\n\r\n", 1)
        sent_line, *sent_headers = head.split("\r\n")
        assert (sent_line, sorted(sent_headers)) == expected(exchange.method, sent)
        assert sent.startswith(body.replace("kitchen", name)[:-1] + ", ") and sent.endswith("}"), sent
        keys = list(json.loads(sent))
        assert keys == [k for k in order if k in keys], keys  # the doc's order
        assert re.fullmatch(r'.*"boot": "[0-9a-f]{12}", "seq": \d+, "vbat": 3\.300.*', sent), sent
    kept_one = json.loads(exchanges[2].request.split(b"\r\n\r\n", 1)[1])
    assert "age" in kept_one and re.search(rb'"age": \d+\.\d{3}[,}]', exchanges[2].request)
    assert stored(firmware_service, name) == [23.4, 23.4, 23.4]


# -- hostile peers -----------------------------------------------------------------------------------


class ResettingPeer(Peer):
    """A peer whose every connection ends in a reset (RST) once its answer is sent."""

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        super()._serve(conn)


# name: (answer, the reading kept: True, False, or None when either is right (a reset that may come
# before or after the 202 was read))
ANSWERS = {
    "garbage": (lambda r: b"garbage\r\n\r\n", True),
    "a-status-line-alone-202": (lambda r: b"HTTP/1.1 202 Accepted\r\n", False),  # the status is what counts
    "a-status-line-alone-503": (lambda r: b"HTTP/1.1 503 Busy\r\n", True),
    "no-status-code": (lambda r: b"HTTP/1.1 Accepted\r\n\r\n", True),
    "a-header-without-colon": (lambda r: b"HTTP/1.1 202 Accepted\r\nno colon here\r\n\r\n{}", True),
    "a-bad-content-length": (lambda r: b"HTTP/1.1 202 Accepted\r\nContent-Length: lots\r\n\r\n{}", False),
    # requests before 1.1 refuses a chunked answer (ValueError), later ones read it
    "chunked": (lambda r: b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", None),
    "an-endless-header-line": (lambda r: Trickle(b"HTTP/1.1 202 Accepted\r\nX-A: ", b"y" * 4096, every=0.001), True),
    "endless-header-lines": (lambda r: Trickle(b"HTTP/1.1 202 Accepted\r\n",
                                               b"".join(b"X-%d: y\r\n" % i for i in range(200)), every=0.001), True),
    "an-endless-status-line": (lambda r: Trickle(b"HTTP/1.1 202 ", b"A" * 4096, every=0.001), True),
    "an-endless-body": (lambda r: Trickle(b"HTTP/1.1 202 Accepted\r\n\r\n{", b" " * 4096, every=0.001), False),
    "a-3xx-without-location": (lambda r: http(302), True),
    "a-4xx-with-location": (lambda r: http(404, headers=("Location: http://127.0.0.1:9/",)), True),
    "405-then-405": (lambda r: http(405), True),
    "405-then-garbage": (lambda r: http(405) if r.method == "PUT" else b"garbage\r\n\r\n", True),
    "405-then-nothing": (lambda r: http(405) if r.method == "PUT" else b"", True),
    "423-garbage-body": (lambda r: http(423, b"\xff\xfe not json"), False),
}
RESETS = {
    "reset-before-answering": (b"", True),
    "reset-in-the-status-line": (b"HTTP/1.1 20", True),
    "reset-in-the-headers": (b"HTTP/1.1 202 Accepted\r\nContent-Le", None),
    "reset-in-the-body": (b"HTTP/1.1 202 Accepted\r\nContent-Length: 50\r\n\r\n{\"sle", None),
}


@pytest.mark.parametrize("how", list(ANSWERS) + list(RESETS))
def test_a_hostile_answer_ends_the_wake_in_deep_sleep_and_keeps_what_was_not_stored(tmp_path, how):
    if how in RESETS:
        data, keeps = RESETS[how]
        peer = ResettingPeer(lambda request: data)
    else:
        answer, keeps = ANSWERS[how]
        peer = Peer(answer)
    with peer:
        board = install(tmp_path / "board", config(peer.url))
        result = boot(board, {**FAST, "heap": "104k", "virtual_sleep": True}, timeout=40)  # 423: the wait in no time
        assert result.slept == FIVE_MINUTES["esp8266"], result.output
        assert peer.requests and well_formed(peer.requests)
        assert [r.method for r in peer.requests] == (["PUT", "POST"] if how.startswith("405") else ["PUT"])
    assert_clean(result)
    if keeps is not None:
        assert kept(board) == (1 if keeps else 0), result.output


@pytest.mark.parametrize("awake, waited", [
    (0, 600), (-5, 600), ("1e999", 600), (10 ** 30, 86400), (0.4, 600), (None, 600), ("[]", 600),
    ('{"a": 1}', 600), ('"soon"', 600), (86401, 86400), (30, 30),
], ids=str)
def test_a_423_with_an_odd_awake_waits_a_bounded_time_then_sleeps(tmp_path, awake, waited):
    raw = awake if isinstance(awake, str) else json.dumps(awake)
    body = ('{"error": "halted", "stored": true, "awake": %s}' % raw).encode()
    with Peer(lambda request: http(423, body)) as peer:
        board = install(tmp_path / "board", config(peer.url))
        result = boot(board, {**HOME, "virtual_sleep": True})
    assert_clean(result)
    assert f"halted: awake for {waited} s" in result.output, result.output
    assert result.slept == FIVE_MINUTES["esp8266"] and kept(board) == 0


@pytest.mark.parametrize("body, slept_s", [
    (b"[1, 2]", 300), (b'"stored"', 300), (b"5", 300), (b"null", 300), (b"{", 300),
    (b'{"sleep": 1e999}', 300), (b'{"sleep": -1e999}', 300), (b'{"sleep": 100000000000000000000000000000}', 4294),
    (b'{"sleep": "soon"}', 300), (b'{"sleep": [600]}', 300), (b'{"sleep": {"s": 600}}', 300),
    (b'{"update": 5}', 300), (b'{"update": "v2"}', 300), (b'{"update": {"version": 5, "files": 5}}', 300),
    (b'{"update": {"version": "v2", "files": [5, {"name": "../main.py"}]}}', 300),
    (b'{"update": {"version": "v2", "files": [{"name": "node.py", "size": 1e999, "sha256": 5}]}}', 300),
    (b'[' * 3000 + b']' * 3000, 300),
], ids=lambda v: v.decode()[:40] if isinstance(v, bytes) else str(v))
def test_a_202_with_odd_json_is_stored_and_the_board_sleeps_within_bounds(tmp_path, body, slept_s):
    with Peer(lambda request: http(202, body) if request.method == "PUT" else http(404)) as peer:
        board = install(tmp_path / "board", config(peer.url))
        state = (board / "ota.json").read_text()
        result = boot(board, {**FAST, "heap": "104k"}, timeout=40)
        assert [r.method for r in peer.requests][:1] == ["PUT"] and well_formed(peer.requests[:1])
    assert_clean(result)
    assert [e["ms"] for e in result.slept] == [slept_s * 1000], result.output
    assert kept(board) == 0 and (board / "ota.json").read_text() == state  # the running bundle stays


# -- a damaged config.json, a flaky board ------------------------------------------------------------


def _set(path: str, value):
    def damage(cfg: dict) -> None:
        *parents, key = path.split(".")
        node = cfg
        for name in parents:
            node = node[name]
        node[key] = value
    return damage


# name: (damage, scenario, the reading sent (True) or kept (False) or never taken (None))
CONFIGS = {
    "ssid-empty": (_set("netconf.ssid", []), {}, False),
    "ssid-an-object": (_set("netconf.ssid", {"home": 1}), {}, False),
    "ssid-one-string": (_set("netconf.ssid", "home"), {}, True),
    "ssids-of-all-kinds": (_set("netconf.ssid", [5, None, "k\u00fcche", "attic", "home"]), {}, True),
    "passwords-short-list": (_set("netconf.password", ["x"]), {}, True),
    "password-null": (_set("netconf.password", None), {}, True),
    "static-ip": (lambda c: c["netconf"].update(ip="192.168.4.50", netmask="255.255.255.0", gateway="192.168.4.1",
                                                dns="192.168.4.1"), {}, True),
    "static-ip-seed-mask": (lambda c: c["netconf"].update(ip="192.168.4.50", mask="255.255.0.0",
                                                          gateway="192.168.4.1"), {}, True),
    "static-ip-empty": (_set("netconf.ip", ""), {}, True),
    "wifi-timeout-huge": (_set("netconf.wifi_timeout", 10 ** 30), {}, True),
    "wifi-timeout-a-word": (_set("netconf.wifi_timeout", "\u00e9ternel"), {}, True),
    "sleep-huge": (_set("netconf.sleep", 10 ** 30), {}, True),
    "awake-huge": (_set("netconf.awake", 10 ** 30), {}, True),
    "dht-pin-huge": (_set("modules.pins.dht", 10 ** 30), {}, None),
    "dht-pin-negative": (_set("modules.pins.dht", -1), {}, None),
    "sensor-unknown": (_set("modules.sensor", "\u00e9"), {}, True),
    "leds-huge": (_set("modules.leds", {"red": 10 ** 30, "green": -1, "blue": "13", "active_low": "no"}), {}, True),
    "leds-empty-list": (_set("modules.leds", []), {}, True),
    "battery-huge": (_set("modules.battery", {"adc": 0, "ratio": 10 ** 30}), {"a0": 0.9}, True),
    "battery-ratio-a-word": (_set("modules.battery", {"adc": "vcc", "ratio": "x"}), {"vcc": 3.3}, True),
    "battery-adc-huge": (_set("modules.battery", {"adc": 10 ** 30}), {}, True),
    "url-unresolvable": (_set("svconf.url", "http://no-such-host.invalid/api/nodes/kitchen"), {}, False),
    "url-no-port": (_set("svconf.url", "http://127.0.0.1:/api/nodes/kitchen"), {}, False),
    "url-a-number": (_set("svconf.url", 5), {}, False),
    "url-empty": (_set("svconf.url", ""), {}, False),
    "url-local-a-number": (lambda c: c["svconf"].update(url="http://127.0.0.1:9/api/nodes/kitchen", url_local=5),
                           {}, False),
    "xauth-missing": (lambda c: c["svconf"].pop("xauth"), {}, False),
    "svconf-a-list": (lambda c: c.__setitem__("svconf", []), {}, False),
    "unknown-keys": (lambda c: c.update({"\u043a\u043b\u044e\u0447": [1e300, None]}), {}, True),
    "sensor-failing": (None, {"sensor_failures": 3}, None),
    "sensor-out-of-range": (None, {"temperature": 300.0, "humidity": -5.0}, True),
}


@pytest.mark.parametrize("how", list(CONFIGS))
def test_a_damaged_config_or_a_flaky_board_still_sleeps_and_keeps_what_it_read(tmp_path, how):
    damage, scenario, sent = CONFIGS[how]
    with Peer(lambda request: STORED) as peer:
        cfg = config(peer.url)
        cfg["netconf"]["ssid"] = ["attic", "home"]
        if damage is not None:
            damage(cfg)
        board = install(tmp_path / "board", cfg)
        result = boot(board, {**FAST, **scenario, "virtual_sleep": True}, timeout=40)
        assert well_formed(peer.requests) and len(peer.requests) == (1 if sent else 0), result.output
    assert_clean(result)
    assert len(result.slept) == 1 and result.returncode == 0, result.output
    assert kept(board) == (1 if sent is False else 0), result.output
