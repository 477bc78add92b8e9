"""Nodes always sleep, whatever the peer does: the real firmware in the real MicroPython Unix port
(its frozen micropython-lib `requests`) against peers that trickle their answer or redirect
(peer.py), and against the real `tswarm serve` for what a node sends after a long halted wake, a
garbled sensor value and config fields of the wrong type.

A wake's bound is a one-shot ``machine.Timer`` (standins/machine.py: its callback runs from a thread
of its own, as the boards run a scheduled callback while a socket read waits); ``timer_scale`` makes
its 90 s pass in 4.5.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.servers import ServiceProcess, run_cli, tswarm_env

from .board import FIRMWARE, _launch, boot, install, micropython_binary
from .capture import RecordingRelay, node_config
from .peer import FAST, FIVE_MINUTES, HOME, STORED, Peer, Trickle, assert_clean, config, http

pytestmark = pytest.mark.integration

BOUND = {"esp8266": [{"id": -1, "mode": "one_shot", "period": 90_000}],
         "esp32": [{"id": 0, "mode": "one_shot", "period": 90_000}]}


def kept_then_sent(board, board_kind: str = "esp8266") -> list[dict]:
    """The next wake against a peer that stores everything: the bodies it sent."""
    with Peer(lambda request: STORED) as good:
        cfg = json.loads((board / "config.json").read_text())
        cfg["svconf"]["url"] = good.url + "/api/nodes/kitchen"
        (board / "config.json").write_text(json.dumps(cfg))
        result = boot(board, {**HOME, "board": board_kind, "temperature": 21.0})
        assert result.slept == FIVE_MINUTES[board_kind], result.output
        return [r.json() for r in good.requests]


# -- a peer that trickles its answer ---------------------------------------------------------------

TRICKLES = {
    # the status line and a body that never ends: a byte a second
    "body": Trickle(b"HTTP/1.1 202 Accepted\r\n\r\n{", b" "),
    # a header line a second, never the blank line
    "header lines": Trickle(b"HTTP/1.1 202 Accepted\r\n", b"X-Slow: yes\r\n"),
    # one header line a byte a second, never its end (requests' readline waits for it)
    "one header line": Trickle(b"HTTP/1.1 202 Accepted\r\nX-Slow: ", b"y"),
}


@pytest.mark.parametrize("board_kind", ["esp8266", "esp32"])
@pytest.mark.parametrize("how", list(TRICKLES))
def test_a_peer_trickling_its_answer_ends_the_wake_at_its_bound_and_the_reading_waits(tmp_path, how, board_kind):
    """requests' timeout is per socket read: a byte a second never reaches it. The wake's one-shot
    Timer ends it, the board sleeps its interval, and the reading goes on the next wake."""
    with Peer(lambda request: TRICKLES[how]) as slow:
        board = install(tmp_path / "board", config(slow.url, board_kind))
        started = time.monotonic()
        result = boot(board, {**FAST, "board": board_kind, "temperature": 20.0}, timeout=40)
        took = time.monotonic() - started
        assert result.slept == FIVE_MINUTES[board_kind], result.output
        assert result.of("timer") == BOUND[board_kind]
        assert "wake took too long" in result.output
        assert took < 20 and len(slow.requests) == 1
    assert_clean(result)
    kept, fresh = kept_then_sent(board, board_kind)
    assert (kept["data"], kept["seq"], fresh["seq"]) == ("20.0 45.0", 0, 1)
    assert "age" in kept and "age" not in fresh


def test_a_wake_that_goes_well_turns_its_bound_off_before_it_sleeps(tmp_path):
    with Peer(lambda request: STORED) as good:
        result = boot(install(tmp_path / "board", config(good.url)), FAST)
    assert result.slept == FIVE_MINUTES["esp8266"]
    names = [e["event"] for e in result.events if e["event"] in ("timer", "timer_deinit", "timer_fired", "deepsleep")]
    assert names == ["timer", "timer_deinit", "deepsleep"]


def test_ctrl_c_during_a_trickled_answer_turns_the_bound_off_and_the_repl_stays(tmp_path):
    """mpremote's Ctrl-C while the wake waits for the peer: the REPL is the person's for as long as
    they need (a copy of the firmware must not be cut short by the bound)."""
    with Peer(lambda request: TRICKLES["body"]) as slow:
        board = install(tmp_path / "board", config(slow.url))
        proc, record = _launch(board, FAST, interactive=True)
        try:
            deadline = time.monotonic() + 20
            while not slow.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert slow.requests, "the wake never sent its reading"
            time.sleep(0.5)  # waiting in the answer
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate("import time\ntime.sleep(8)\nprint('still', 'awake')\n", timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    events = [json.loads(line)["event"] for line in record.read_text().splitlines()]
    assert "still awake" in out, out
    assert "KeyboardInterrupt" in out
    assert "deepsleep" not in events and "timer_fired" not in events and "timer_deinit" in events


# -- redirects are never followed ----------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_failed_send_and_nothing_goes_to_the_location(tmp_path, status):
    """MicroPython's requests would follow it without the timeout (a Location that never answers
    kept the board awake), as a GET without the reading, with the node's Authorization."""
    with Peer() as location, Peer(lambda request: http(status, headers=(f"Location: {location.url}/x",))) as moved:
        board = install(tmp_path / "board", config(moved.url))
        result = boot(board, {**FAST, "temperature": 19.5}, timeout=40)
        assert result.slept == FIVE_MINUTES["esp8266"], result.output
        assert location.connections == 0
        assert [r.method for r in moved.requests] == ["PUT"]
        assert "redirect" in result.output and "wake took too long" not in result.output
    assert_clean(result)
    kept, fresh = kept_then_sent(board)
    assert (kept["data"], kept["seq"], fresh["seq"]) == ("19.5 45.0", 0, 1) and "age" in kept


def test_an_update_file_that_redirects_is_not_fetched_from_the_location(tmp_path):
    offer = {"version": "v9", "files": [{"name": "node.py", "size": 5, "sha256": "0" * 64}]}

    def answer(request):
        if request.method == "PUT":
            return http(202, {"stored": True, "sleep": 300, "update": offer})
        return http(301, headers=(f"Location: {location.url}/firmware/v9/node.py",))

    with Peer() as location, Peer(answer) as service:
        board = install(tmp_path / "board", config(service.url))
        state = (board / "ota.json").read_text()
        result = boot(board, FAST, timeout=40)
        assert result.slept == FIVE_MINUTES["esp8266"], result.output
        assert [(r.method, r.path) for r in service.requests] == [
            ("PUT", "/api/nodes/kitchen"), ("GET", "/api/nodes/kitchen/firmware/v9/node.py")]
        assert location.connections == 0
    assert "update failed" in result.output and "redirect" in result.output
    assert (board / "ota.json").read_text() == state  # the running bundle stays


MASTER_GET = """
import sys
sys.path.insert(0, %r)
import node, master, requests
before = requests.request
try:
    print("answered", master.fetchPage(node, {"url": %r, "xauth": "eDp5"}, 0, 7))
except OSError as exc:
    print("refused", repr(exc))
print("restored", requests.request is before)
"""


def test_the_masters_get_of_the_swarm_never_follows_a_redirect(tmp_path):
    with Peer() as location, Peer(lambda request: http(302, headers=(f"Location: {location.url}/swarm",))) as moved:
        script = MASTER_GET % (str(FIRMWARE), moved.url + "/api/nodes/screen")
        proc = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=30)
        assert location.connections == 0
    lines = proc.stdout.splitlines()
    assert lines[-2].startswith("refused OSError") and "redirect" in lines[-2], proc.stdout + proc.stderr
    assert lines[-1] == "restored True"


# -- what the answer says, of the wrong type ---------------------------------------------------------


def test_a_202_whose_sleep_is_true_sleeps_the_default_not_one_second(tmp_path):
    with Peer(lambda request: http(202, {"stored": True, "sleep": True})) as peer:
        result = boot(install(tmp_path / "board", config(peer.url)), HOME)
    assert result.slept == FIVE_MINUTES["esp8266"], result.output


def test_a_423_whose_awake_is_true_waits_the_default(tmp_path):
    with Peer(lambda request: http(423, {"error": "halted", "stored": True, "awake": True})) as peer:
        result = boot(install(tmp_path / "board", config(peer.url)), {**HOME, "virtual_sleep": True})
    assert "halted: awake for 600 s" in result.output, result.output
    assert result.slept == FIVE_MINUTES["esp8266"]


@pytest.mark.parametrize("board", ["esp8266", "esp32"])
@pytest.mark.parametrize("sleep, slept_s", [
    (1, 300), (9, 300), (3.7, 300),  # below the service's 10 s: netconf.sleep (here none: 300 s), not a battery drained in a day
    (10, 10), (604800, 604800),
    (1e12, 604800), (99999999999999999999, 604800),  # a week at most: before, an ESP32 slept 24.8 days
])
def test_a_202s_sleep_is_taken_within_the_services_own_range(tmp_path, board, sleep, slept_s):
    with Peer(lambda request: http(202, {"stored": True, "sleep": sleep})) as peer:
        result = boot(install(tmp_path / "board", config(peer.url, board)), {**HOME, "board": board})
    if board == "esp8266":
        slept_s = min(slept_s, 4294)  # what its chip can
    assert [entry["ms"] for entry in result.slept] == [slept_s * 1000], result.output


@pytest.mark.parametrize("damaged", ["v2 \x01garbled", "../../x", "v" * 65, 17, ["v2"]])
def test_a_damaged_rolled_back_version_is_sent_as_unknown_and_the_reading_stored(tmp_path, damaged):
    """ota.json's ``rolled_back`` as a damaged bundle or a hand edit leaves it: sent as it was, the
    service refused every reading (400 bad_firmware_version, which the board drops) until a reflash."""
    seen = []

    def answer(request):
        seen.append(request.headers)
        return STORED

    board = install(tmp_path / "board", None)
    with Peer(answer) as peer:
        (board / "config.json").write_text(json.dumps(config(peer.url)))
        (board / "ota.json").write_text(json.dumps({"active": "", "rolled_back": damaged}))
        result = boot(board, HOME)
    assert [h.get("X-Tswarm-Rolled-Back") for h in seen] == ["unknown"], result.output
    assert result.slept == FIVE_MINUTES["esp8266"]


@pytest.mark.parametrize("version", ["../../x", "v 2", "", 2])
def test_an_offer_of_a_version_the_service_never_names_is_not_fetched(tmp_path, version):
    """A version becomes a folder's file and a header: before, "../../x" was fetched and written to ota.json."""
    seen = []
    offer = {"version": version, "files": [{"name": "node.py", "size": 1, "sha256": "0" * 64}]}

    def answer(request):
        seen.append((request.method, request.path))
        return http(202, {"stored": True, "sleep": 300, "update": offer})

    board = install(tmp_path / "board", None)
    state = (board / "ota.json").read_text()
    with Peer(answer) as peer:
        (board / "config.json").write_text(json.dumps(config(peer.url)))
        result = boot(board, HOME)
    assert [method for method, _ in seen] == ["PUT"], result.output
    assert (board / "ota.json").read_text() == state
    assert result.slept == FIVE_MINUTES["esp8266"]


# -- against the real service ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay(firmware_service):
    with RecordingRelay(firmware_service.port) as relay:
        yield relay


def make_node(service, relay, request, board: str = "esp8266") -> tuple[str, dict]:
    return node_config(service, relay, request, "bounds-and-ranges", board)


def stored(service, name: str) -> list[dict]:
    out = run_cli(service.data_dir, "export", "--node", name, "--format", "ndjson").stdout
    return [json.loads(line) for line in out.splitlines()]


def bodies(relay) -> list[tuple[int, dict]]:
    return [(e.status, json.loads(e.request.split(b"\r\n\r\n", 1)[1])) for e in relay.take()]


def test_after_a_day_long_halted_wake_awake_ms_is_the_most_the_service_takes(tmp_path_factory, tmp_path):
    """TSWARM_HALT_AWAKE=4000 keeps a halted node awake beyond the hour awake_ms may say: the next
    reading says 3600000 and is stored, where 4000000 would be refused (422) and dropped for good."""
    data = tmp_path_factory.mktemp("halt-awake") / "data"
    data.mkdir()
    env = tswarm_env(data, TSWARM_HALT_AWAKE="4000")
    with ServiceProcess(data, env=env) as service, RecordingRelay(service.port) as relay:
        name = "long-halt"
        svconf = json.loads(run_cli(data, "node", "add", name, "--password", "bounds-and-ranges", env=env).stdout)
        cfg = config(f"http://127.0.0.1:{relay.port}")
        cfg["svconf"] = {**svconf, "url": f"http://127.0.0.1:{relay.port}/api/nodes/{name}"}
        board = install(tmp_path / "board", cfg)
        boot(board, {**HOME, "temperature": 21.0})
        run_cli(data, "halt", name, env=env)
        halted = boot(board, {**HOME, "temperature": 22.0, "virtual_sleep": True})
        assert "halted: awake for 4000 s" in halted.output, halted.output  # the 423's "awake": over ten minutes
        assert halted.slept == FIVE_MINUTES["esp8266"]
        run_cli(data, "resume", name, env=env)
        relay.take()
        after = boot(board, {**HOME, "temperature": 23.0})
        assert_clean(after)
        ((status, sent),) = bodies(relay)
        assert (status, sent["awake_ms"]) == (202, 3_600_000)
        rows = [json.loads(line) for line in run_cli(data, "export", "--node", name, "--format", "ndjson",
                                                     env=env).stdout.splitlines()]
        assert [r["temperature"] for r in rows] == [21.0, 22.0, 23.0]


@pytest.mark.parametrize("reading, data", [
    ({"humidity": 3300.5}, "20.0 3276.7"),  # wrapped round, this was sent as 23.7 %RH
    ({"humidity": 3277.3}, "20.0 3276.7"),  # wrapped round, 0.5 %RH
    ({"temperature": 6577.0}, "3276.7 45.0"),  # wrapped round, 23.4 °C
    ({"temperature": -3300.0}, "-3276.7 45.0"),
], ids=["humidity-3300.5", "humidity-3277.3", "temperature-6577", "temperature-minus-3300"])
def test_a_garbled_dht22_value_beyond_its_kept_field_is_refused_not_sent_as_a_plausible_one(
        firmware_service, relay, request, tmp_path, reading, data):
    name, cfg = make_node(firmware_service, relay, request)
    board = install(tmp_path / "board", cfg)
    boot(board, {**HOME, "temperature": 20.0, "humidity": 45.0})  # the node is created
    relay.take()
    result = boot(board, {**HOME, "temperature": 20.0, "humidity": 45.0, **reading})
    assert_clean(result)
    assert [(s, b["data"]) for s, b in bodies(relay)] == [(422, data)]  # impossible: dropped for good
    boot(board, {**HOME, "temperature": 24.0, "humidity": 40.0})
    assert [(s, b["data"]) for s, b in bodies(relay)] == [(202, "24.0 40.0")]
    assert [(r["temperature"], r["humidity"]) for r in stored(firmware_service, name)] == [(20.0, 45.0), (24.0, 40.0)]


@pytest.mark.parametrize("password", [5, {"a": 1}, [5, None]], ids=["a-number", "an-object", "a-list-of-numbers"])
def test_a_password_of_the_wrong_type_is_no_password(firmware_service, relay, request, tmp_path, password):
    name, cfg = make_node(firmware_service, relay, request)
    cfg["netconf"]["password"] = password
    result = boot(install(tmp_path / "board", cfg), {**HOME, "temperature": 17.5})
    assert_clean(result)
    assert [(e["ssid"], e["password"]) for e in result.of("connect")] == [("attic", ""), ("home", "")]
    assert [r["temperature"] for r in stored(firmware_service, name)] == [17.5]
    relay.take()


@pytest.mark.parametrize("board_kind, pin", [("esp8266", 5), ("esp32", 4)])
@pytest.mark.parametrize("dht", ["5", None, 2.0], ids=["a-string", "null", "a-float"])
def test_a_dht_pin_of_the_wrong_type_is_the_boards_default(firmware_service, relay, request, tmp_path, board_kind,
                                                           pin, dht):
    name, cfg = make_node(firmware_service, relay, request, board_kind)
    cfg["modules"]["pins"]["dht"] = dht
    result = boot(install(tmp_path / "board", cfg), {**HOME, "board": board_kind, "temperature": 18.5})
    assert_clean(result)
    assert [e["pin"] for e in result.of("dht")] == [pin]
    assert [r["temperature"] for r in stored(firmware_service, name)] == [18.5]
    relay.take()
