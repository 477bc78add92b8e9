"""Telemetry and readings kept through outages: the real firmware (firmware/main.py, node.py,
keep.py) in the real MicroPython Unix port, against the real `tswarm serve` and its journal.

The board's ADC, Wi-Fi and RTC memory are the stand-ins of standins/ (machine.py, network.py): the
RTC memory outlives each ``boot()`` (a deep sleep) and is gone after ``power_loss()``. A recording
relay (capture.py) between node and service shows each request body and can drop a connection
after the service answered (a 202 lost on the way back); stopping the service is a real outage.
What the journal holds is read from its SQLite file.
"""
from __future__ import annotations

import json
import zlib

import pytest

from tswarm.storage import open_storage
from tests.servers import ServiceProcess, run_cli, tswarm_env

from .board import boot, install, install_files, power_loss, rtc_path
from .capture import RecordingRelay

pytestmark = pytest.mark.integration

PASSWORD = "battery-and-signal"
HOME = {"ssids": ["home"]}
AWAY = {"ssids": []}  # no network in reach
NS = 1_000_000_000
ESP8266_KEPT = (492 - 26) // 15  # readings RTC memory holds on an ESP8266 (keep.py's layout)


@pytest.fixture
def service(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("telemetry") / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir) as service:
        yield service


@pytest.fixture
def relay(service):
    with RecordingRelay(service.port) as relay:
        yield relay


def make_node(service, relay, request, *args: str) -> tuple[str, dict]:
    """(name, config) from the real `tswarm node config`; url and url_local both through the relay."""
    name = f"{request.node.name[5:25].replace('_', '-').strip('-')}-{zlib.crc32(request.node.name.encode()):08x}"
    env = tswarm_env(service.data_dir, TSWARM_PUBLIC_URL=f"http://127.0.0.1:{relay.port}")
    config = json.loads(run_cli(service.data_dir, "node", "config", name, "--password", PASSWORD,
                                "--wifi-ssid", "home", "--wifi-password", "home-pw", "--allow-loopback", *args,
                                env=env).stdout)
    config["svconf"]["url_local"] = config["svconf"]["url"]
    return name, config


def stored(service, name: str) -> list[dict]:
    """The node's readings in the journal, oldest first, with every column of issue 15."""
    with open_storage(service.data_dir) as journal:
        rows = journal.conn.execute(
            "SELECT r.ts, r.temperature, r.humidity, r.vbat, r.rssi, r.awake_ms, r.lost, r.boot, r.seq "
            "FROM readings r JOIN nodes n ON n.id = r.node_id WHERE n.name = ? ORDER BY r.ts", (name,)).fetchall()
    keys = ("ts", "temperature", "humidity", "vbat", "rssi", "awake_ms", "lost", "boot", "seq")
    return [dict(zip(keys, row)) for row in rows]


def body(exchange) -> dict:
    return json.loads(exchange.request.split(b"\r\n\r\n", 1)[1])


def answer(exchange) -> dict:
    return json.loads(exchange.response.split(b"\r\n\r\n", 1)[1])


def sent(relay) -> list[tuple[str, int, dict]]:
    """(method, status, body) of every request since the last look."""
    return [(e.method, e.status, body(e)) for e in relay.take()]


def assert_clean(result) -> None:
    assert "Traceback" not in result.output and "MemoryError" not in result.output, result.output
    assert result.returncode == 0 and len(result.slept) == 1, result.output


# -- telemetry from each board kind ----------------------------------------------------------------


BOARDS = {
    # ESP8266 measuring its own supply: firmware whose init data is set for VCC (ADC(1) in 1/1024 V)
    "esp8266 vcc": ({"adc": "vcc"}, {"board": "esp8266", "vcc": 3.05}, round(int(3.05 * 1024) / 1024, 3)),
    # ESP8266, a battery through a divider onto A0 (0.9 V at the chip of 0-1.0 V, ratio 4.2)
    "esp8266 A0 divider": ({"adc": 0, "ratio": 4.2}, {"board": "esp8266", "a0": 0.9},
                           round(int(0.9 * 1024) / 1024 * 4.2, 3)),
    # ESP32, a battery through a 1:1 divider onto GPIO35 at 11 dB (1.9 V at the pin)
    "esp32 adc pin": ({"adc": 35, "ratio": 2.0, "atten": 3}, {"board": "esp32", "adc": {"35": 1.9}}, 3.8),
}


@pytest.mark.parametrize("kind", list(BOARDS))
def test_telemetry_of_each_board_kind_is_sent_and_stored_with_the_reading(service, relay, request, tmp_path, kind):
    battery, scenario, volts = BOARDS[kind]
    name, config = make_node(service, relay, request, "--board", scenario["board"])
    config["modules"]["battery"] = battery
    board = install(tmp_path / "board", config)
    here = {**HOME, **scenario, "rssi": -57}

    first = boot(board, {**here, "temperature": 21.5})
    assert_clean(first)
    (_, _, put), (_, _, post) = sent(relay)  # the first PUT is a 405: the POST creates the node
    assert put == post and post["vbat"] == volts and post["rssi"] == -57
    assert "awake_ms" not in post  # nothing is known of a wake before the first
    second = boot(board, {**here, "temperature": 22.5, "rssi": -71})
    assert_clean(second)
    ((method, status, again),) = sent(relay)
    assert (method, status) == ("PUT", 202)
    assert again["boot"] == post["boot"] and (post["seq"], again["seq"]) == (0, 1)
    assert 0 < again["awake_ms"] < 3_600_000 and "age" not in again and "lost" not in again

    rows = stored(service, name)
    assert [(r["temperature"], r["vbat"], r["rssi"], r["awake_ms"], r["lost"], r["seq"]) for r in rows] == [
        (21.5, volts, -57, None, None, 0), (22.5, volts, -71, again["awake_ms"], None, 1)]
    if scenario["board"] == "esp32":
        assert second.of("atten") == [{"pin": 35, "atten": 3}]


def test_a_board_without_battery_config_or_vcc_firmware_sends_no_vbat(service, relay, request, tmp_path):
    """ADC(1) of MicroPython's own ESP8266 firmware (init data byte 107 = 0) reads 65535: no voltage."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, HOME)
    config["modules"]["battery"] = {"adc": "vcc"}
    result = boot(install(board, config), HOME)
    assert "battery: ADC(1) reads no VCC on this firmware" in result.output
    assert all("vbat" not in b for _, _, b in sent(relay))
    assert [r["vbat"] for r in stored(service, name)] == [None, None]


# -- kept through an outage ----------------------------------------------------------------------


def test_three_wakes_with_the_service_down_then_one_up_store_all_four_once_about_an_interval_apart(
        service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    service.kill()
    for t in (10.0, 11.0, 12.0):
        result = boot(board, {**HOME, "temperature": t})
        assert_clean(result)
        assert "cannot send:" in result.output
        assert result.slept == [{"ms": 300_000, "via": "esp.deepsleep"}]
    assert stored(service, name) == []
    service.start()
    relay.take()

    result = boot(board, {**HOME, "temperature": 13.0})
    assert_clean(result)
    requests = sent(relay)
    assert [(m, s) for m, s, _ in requests] == [("PUT", 405), ("POST", 202), ("PUT", 202), ("PUT", 202), ("PUT", 202)]
    bodies = [b for _, _, b in requests[1:]]
    assert [(b["data"], b["seq"]) for b in bodies] == [("10.0 45.0", 0), ("11.0 45.0", 1), ("12.0 45.0", 2),
                                                      ("13.0 45.0", 3)]
    assert len({b["boot"] for b in bodies}) == 1
    assert "age" not in bodies[3]  # this wake's own reading: now
    # the clock RTC memory keeps: each wake adds its length and the 300 s it planned to sleep
    for before, after in zip(bodies, bodies[1:]):
        assert after["awake_ms"] > 0
        if "age" in after:
            assert before["age"] - after["age"] == pytest.approx(300 + after["awake_ms"] / 1000, abs=1)

    rows = stored(service, name)
    assert [(r["temperature"], r["seq"]) for r in rows] == [(10.0, 0), (11.0, 1), (12.0, 2), (13.0, 3)]
    for before, after, b in zip(rows, rows[1:], bodies[1:]):
        gap = (after["ts"] - before["ts"]) / NS  # about one interval (and the wake before), not seconds
        assert gap == pytest.approx(300 + b["awake_ms"] / 1000, abs=5)
    boot(board, {**HOME, "temperature": 14.0})  # nothing left to send again
    ((method, status, last),) = sent(relay)
    assert (method, status, last["seq"], "age" in last) == ("PUT", 202, 4, False)


def test_a_lost_202_is_sent_again_on_the_next_wake_and_stored_once(service, relay, request, tmp_path):
    """The service commits the reading and answers 202; the connection drops before the answer
    reaches the node (the relay cuts the response to nothing, as a Wi-Fi gone at that moment)."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, {**HOME, "temperature": 20.0})
    relay.take()

    relay.cut = (b'"seq": 1,', 0)
    result = boot(board, {**HOME, "temperature": 21.0})
    assert_clean(result)
    assert "cannot send:" in result.output
    assert [e.response for e in relay.take()] == [b""]
    assert [(r["temperature"], r["seq"]) for r in stored(service, name)] == [(20.0, 0), (21.0, 1)]  # committed

    relay.cut = None
    result = boot(board, {**HOME, "temperature": 22.0})
    assert_clean(result)
    again, fresh = relay.take()
    assert (again.status, body(again)["seq"], body(again)["data"]) == (202, 1, "21.0 45.0")
    assert body(again)["age"] > 300 and answer(again)["duplicate"] is True
    assert (fresh.status, body(fresh)["seq"]) == (202, 2) and "duplicate" not in answer(fresh)
    rows = stored(service, name)
    assert [(r["temperature"], r["seq"]) for r in rows] == [(20.0, 0), (21.0, 1), (22.0, 2)]
    assert len({r["boot"] for r in rows}) == 1


def test_a_full_rtc_memory_drops_the_oldest_reports_lost_and_a_wake_sends_at_most_eight(
        service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, {**HOME, "temperature": 0.0})  # seq 0, delivered (the node is created)
    relay.take()
    away = ESP8266_KEPT + 3
    for i in range(away):  # seq 1..away, none delivered
        boot(board, {**AWAY, "temperature": float(i + 1)})
    assert len(rtc_path(board).read_bytes()) == 26 + 15 * ESP8266_KEPT <= 492  # full

    result = boot(board, {**HOME, "temperature": 40.0})  # seq away + 1: kept too, the oldest give way
    assert_clean(result)
    first = sent(relay)
    dropped = away + 1 - ESP8266_KEPT  # seq 1..dropped gave way
    assert [(s, b["seq"]) for _, s, b in first] == [(202, seq) for seq in range(dropped + 1, dropped + 9)]
    assert first[0][2]["lost"] == dropped and all("lost" not in b for _, _, b in first[1:])

    wakes = 0
    while True:  # the rest go out over the next wakes, eight at a time, each wake's own reading last
        wakes += 1
        result = boot(board, {**HOME, "temperature": 50.0})
        requests = sent(relay)
        assert 1 <= len(requests) <= 8 and [s for _, s, _ in requests] == [202] * len(requests), [(s, b) for _, s, b in requests if s != 202]
        if "age" not in requests[-1][2]:
            break
    rows = stored(service, name)
    seqs = [r["seq"] for r in sorted(rows, key=lambda r: r["seq"])]
    assert seqs == [0] + list(range(dropped + 1, away + 2 + wakes))  # each once, none of the dropped
    assert {r["seq"]: r["lost"] for r in rows if r["lost"]} == {dropped + 1: dropped}


def test_a_kept_reading_the_service_refuses_for_good_gives_way_to_the_next(service, relay, request, tmp_path):
    """A 422 (99 °C is beyond a DHT22) will never become a 202: it leaves RTC memory, the next goes."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, {**HOME, "temperature": 20.0})
    boot(board, {**AWAY, "temperature": 99.0})
    relay.take()
    assert_clean(boot(board, {**HOME, "temperature": 21.0}))
    assert [(s, b["seq"]) for _, s, b in sent(relay)] == [(422, 1), (202, 2)]
    boot(board, {**HOME, "temperature": 22.0})
    assert [(s, b["seq"]) for _, s, b in sent(relay)] == [(202, 3)]
    assert [r["temperature"] for r in stored(service, name)] == [20.0, 21.0, 22.0]


def test_a_power_loss_makes_a_new_boot_identity_and_nothing_is_taken_for_a_repeat(service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, {**HOME, "temperature": 30.0})
    boot(board, {**AWAY, "temperature": 31.0})  # kept in RTC memory ...
    power_loss(board)  # ... and gone with it
    result = boot(board, {**HOME, "temperature": 32.0})
    assert_clean(result)
    assert "new boot" in result.output
    (_, _, first), (_, _, second) = [e for e in sent(relay) if e[1] == 202]
    assert (first["seq"], second["seq"]) == (0, 0) and first["boot"] != second["boot"]
    assert "awake_ms" not in second  # what the last wake took went with the power
    rows = stored(service, name)
    assert [(r["temperature"], r["seq"]) for r in rows] == [(30.0, 0), (32.0, 0)]


def test_rtc_memory_that_is_not_ours_is_a_power_loss(service, relay, request, tmp_path):
    """Whatever else left RTC memory (another firmware, a brown-out) is never read as kept readings."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    rtc_path(board).write_bytes(b"ts1" + bytes(range(41)))  # our mark, but the check byte is wrong
    result = boot(board, {**HOME, "temperature": 15.0})
    assert_clean(result)
    assert "new boot" in result.output
    assert [(s, b["seq"]) for _, s, b in sent(relay)] == [(405, 0), (202, 0)]


# -- what the seed's and today's firmware send keeps its answers ----------------------------------------


def test_todays_firmware_and_the_seeds_request_still_get_exactly_todays_answers(service, relay, request, tmp_path):
    from pathlib import Path

    before = {p.name: p.read_bytes() for p in (Path(__file__).parent / "before_ota").glob("*.py")}
    name, config = make_node(service, relay, request)
    board = install_files(tmp_path / "board", {**before, "config.json": json.dumps(config)})
    for _ in range(2):
        boot(board, {**HOME, "temperature": 26.0})
    exchanges = relay.take()
    assert [(e.method, e.status) for e in exchanges] == [("PUT", 405), ("POST", 202), ("PUT", 202)]
    for e in exchanges:
        assert body(e) == {"name": name, "data": "26.0 45.0"}
    for e in exchanges[1:]:  # no "duplicate", no "update": the answer of the firmware before
        assert sorted(answer(e)) == ["node", "sleep", "stored", "time"]
    assert not rtc_path(board).exists()  # today's firmware never touches RTC memory
    rows = stored(service, name)
    assert [(r["temperature"], r["vbat"], r["rssi"], r["awake_ms"], r["lost"], r["boot"], r["seq"]) for r in rows] == [
        (26.0, None, None, None, None, None, None)] * 2  # the same body twice: two readings, as always
