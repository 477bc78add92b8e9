"""The master node (firmware/master.py, run by firmware/main.py when config.json has
``modules.screen``) in the real MicroPython Unix port, against the real `tswarm serve`.

Stand-ins, as for the sensor node (standins/): the board's `machine` (with an I2C bus carrying a
stand-in SSD1306 controller, standins/_oled.py, that decodes the driver's commands and keeps the
display RAM), `network`, `dht`. The driver is micropython-lib's real ssd1306.py (tests/firmware/vendor,
put into the board's lib/ as `tswarm flash --master` installs it with mip), drawing with the Unix
port's real framebuf. What the screen shows is read back from the chip's RAM by tests/firmware/screen.py
(the panel as a person sees it, its text read cell by cell against framebuf's own font).

Each test has its own service: the screen lists every node the service holds.
With MASTER_SCREENS_DIR set (scripts/render-master-screens.py sets it to docs/img), the tests
that make the pictures of docs/flashing.md write them there.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.servers import ServiceProcess, basic, request, run_cli

from .board import HERE, RunningBoard, boot, install, install_files, screen_path
from .capture import RecordingRelay
from .peer import Peer, Trickle, http
from .screen import Text, read_panel, read_text, save_png

pytestmark = pytest.mark.integration

PASSWORD = "door-display-pw"
DRIVER = HERE / "vendor" / "ssd1306.py"
HOME = {"ssids": ["home"]}
OLED_64 = {"oled": {"address": 60, "height": 64}}
OLED_32 = {"oled": {"address": 60, "height": 32}}
SCREENS = os.environ.get("MASTER_SCREENS_DIR")


@pytest.fixture
def service(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir) as service:
        yield service


def add(service, name: str, *args: str, interval: int | None = None) -> dict:
    """`tswarm node add NAME` (with ``args``, e.g. ``--display``); the svconf for this service."""
    run_cli(service.data_dir, "node", "add", name, "--password", PASSWORD, *args)
    if interval:
        run_cli(service.data_dir, "node", "interval", name, str(interval))
    xauth = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
    return {"url": f"{service.url}/api/nodes/{name}", "login": name, "xauth": xauth}


def send(service, name: str, data: str, **more) -> None:
    """A reading of node ``name`` as a sensor node sends it (``more``: vbat, age of docs/protocol.md)."""
    body = json.dumps({"name": name, "data": data, **more})
    status, _, answer = request("POST", f"{service.url}/api/nodes/{name}", body,
                                {"Authorization": basic(name, PASSWORD), "Content-Type": "application/json"})
    assert status in (202, 423), answer


def master_config(svconf: dict, screen: dict | None = None, sensor: bool = False) -> dict:
    modules = {"board": "esp8266", "screen": {"sda": 4, "scl": 5, "width": 128, "height": 64, "address": 60,
                                              "rotate": 0, "page_s": 1, **(screen or {})}}
    if sensor:
        modules.update(sensor="dht22", pins={"dht": 14})
    return {"modules": modules, "svconf": svconf,
            "netconf": {"ssid": ["home"], "password": ["home-pw"], "sleep": 10}}


def flash(tmp_path: Path, config: dict) -> Path:
    """A board with what `tswarm flash --master` puts on it: the firmware, config.json, the driver in lib/."""
    board = install(tmp_path / "board", config)
    (board / "lib").mkdir(exist_ok=True)
    shutil.copy(DRIVER, board / "lib" / "ssd1306.py")
    return board


def screen(board: Path, rotated: bool = False) -> Text | None:
    panel = read_panel(screen_path(board))
    if panel is None:
        return None
    return read_text(panel.rotated() if rotated else panel)


def wait_screen(running: RunningBoard, board: Path, check, timeout: float = 60, rotated: bool = False) -> Text:
    """Poll the panel until ``check(text)`` holds (the master redraws every page_s)."""
    deadline = time.monotonic() + timeout
    text = None
    while time.monotonic() < deadline:
        text = screen(board, rotated)
        if text is not None and check(text):
            return text
        if running.ended:
            break
        time.sleep(0.1)
    raise AssertionError(f"the screen never showed it; last:\n{text}\n--- board output:\n{running.output}")


def picture(board: Path, tmp_path: Path, name: str) -> Path:
    """The panel as a PNG: into MASTER_SCREENS_DIR when set, else beside the test's files."""
    panel = read_panel(screen_path(board))
    return save_png(panel, Path(SCREENS or tmp_path) / name)


def header(text: Text) -> str:
    return text.lines[0]


def the_swarm(service: ServiceProcess) -> None:
    """Seven nodes as the pictures of docs/flashing.md show them: one of each health, one on a low
    battery; hall is the master (it sends its own reading)."""
    add(service, "attic")
    send(service, "attic", "21.5 40.0", vbat=3.1, age=600)  # late (interval 300), battery low (< 3.3 V)
    add(service, "bedroom")
    send(service, "bedroom", "19.8 52.0", vbat=3.9)
    add(service, "cellar")
    send(service, "cellar", "12.0 81.0", age=4000)  # silent: nothing for over an hour
    add(service, "garage")
    send(service, "garage", "-3.2 77.0")
    run_cli(service.data_dir, "halt", "garage")
    add(service, "kitchen")
    send(service, "kitchen", "23.4 45.1")
    add(service, "porch")  # never sent a reading


SWARM_LINES = [
    "7 nodes 4!      ",
    "?attic   21.5 40",
    " bedroom 19.8 52",
    "!cellar  12.0 81",
    "Hgarage  -3.2 77",
    " hall    22.0 38",
    " kitchen 23.4 45",
    "-porch     -- --",
]


def test_screen_shows_every_node_with_the_values_the_service_holds(service, tmp_path):
    the_swarm(service)
    svconf = add(service, "hall", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf, sensor=True))

    with RunningBoard(board, {**HOME, **OLED_64, "temperature": 22.0, "humidity": 38.0}) as running:
        text = wait_screen(running, board, lambda t: "hall" in str(t))
        picture(board, tmp_path, "master-128x64.png")

    assert text.lines == SWARM_LINES
    # the low battery: attic's mark in inverse video, and nothing else
    assert text.inverse == ["#" + " " * 15 if i == 1 else " " * 16 for i in range(8)]
    # the marks are the service's health
    status, _, body = request("GET", f"{service.url}/api/nodes/hall/swarm", headers={"Authorization": basic("hall", PASSWORD)})
    assert status == 200
    summary = json.loads(body)
    assert [(n["name"], n["health"]) for n in summary["nodes"]] == [
        ("attic", "late"), ("bedroom", "ok"), ("cellar", "silent"), ("garage", "halted"), ("hall", "ok"),
        ("kitchen", "ok"), ("porch", "never")]
    assert "Traceback" not in running.output


def test_master_with_its_own_dht_delivers_its_reading(service, tmp_path):
    svconf = add(service, "hall", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf, sensor=True))

    with RunningBoard(board, {**HOME, **OLED_64, "temperature": -4.5, "humidity": 91.0}) as running:
        text = wait_screen(running, board, lambda t: "hall" in str(t))

    assert text.lines[:2] == ["1 node ok       ", " hall    -4.5 91"]
    out = run_cli(service.data_dir, "export", "--node", "hall", "--format", "ndjson").stdout
    assert [(r["temperature"], r["humidity"]) for r in map(json.loads, out.splitlines())][:1] == [(-4.5, 91.0)]
    assert "Traceback" not in running.output


def test_pages_through_the_nodes_a_screenful_a_request(service, tmp_path):
    for i in range(1, 11):
        add(service, f"node-{i:02d}")
        send(service, f"node-{i:02d}", f"{20 + i}.0 {40 + i}.0")
    svconf = add(service, "door", "--display", interval=10)
    with RecordingRelay(service.port) as relay:
        svconf["url"] = f"http://127.0.0.1:{relay.port}/api/nodes/door"
        board = flash(tmp_path, master_config(svconf))
        with RunningBoard(board, {**HOME, **OLED_64}) as running:
            first = wait_screen(running, board, lambda t: t.lines[0].endswith("1/2"))
            second = wait_screen(running, board, lambda t: t.lines[0].endswith("2/2"))
        asked = [e.request.split(b" ")[1].decode() for e in relay.take()]

    # door itself, a master without a sensor, is not on its own screen (the service leaves it out)
    assert first.lines == ["10 nodes ok  1/2"] + [f" node-{i:02d} {20 + i}.0 {40 + i}" for i in range(1, 8)]
    assert second.lines == ["10 nodes ok  2/2"] + [f" node-{i:02d} {20 + i}.0 {40 + i}" for i in range(8, 11)] + [" " * 16] * 4
    # each refresh reads the summary a screenful (7 nodes) at a time
    assert asked[:2] == ["/api/nodes/door/swarm?offset=0&limit=7", "/api/nodes/door/swarm?offset=7&limit=7"]


def test_128x32_shows_three_nodes_a_page(service, tmp_path):
    the_swarm(service)
    svconf = add(service, "hall", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf, screen={"height": 32}, sensor=True))

    with RunningBoard(board, {**HOME, **OLED_32, "temperature": 22.0, "humidity": 38.0}) as running:
        first = wait_screen(running, board, lambda t: t.lines[0].endswith("1/3"))
        picture(board, tmp_path, "master-128x32.png")
        last = wait_screen(running, board, lambda t: t.lines[0].endswith("3/3"))

    assert first.lines == ["7 nodes 4!   1/3"] + SWARM_LINES[1:4]
    assert last.lines == ["7 nodes 4!   3/3", SWARM_LINES[7], " " * 16, " " * 16]


def test_rotated_180_the_picture_is_turned(service, tmp_path):
    svconf = add(service, "hall", "--display", interval=10)
    send(service, "hall", "21.0 50.0")
    board = flash(tmp_path, master_config(svconf, screen={"rotate": 180}))

    with RunningBoard(board, {**HOME, **OLED_64}) as running:
        turned = wait_screen(running, board, lambda t: "hall" in str(t), rotated=True)
        upright = screen(board)

    assert turned.lines[:2] == ["1 node ok       ", " hall    21.0 50"]
    assert "hall" not in str(upright)


def test_unreachable_service_is_shown_with_since_when_and_the_master_recovers(service, tmp_path):
    the_swarm(service)
    svconf = add(service, "hall", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf, sensor=True))

    with RunningBoard(board, {**HOME, **OLED_64, "temperature": 22.0, "humidity": 38.0}) as running:
        wait_screen(running, board, lambda t: t.lines == SWARM_LINES)
        service.stop()
        down = wait_screen(running, board, lambda t: header(t).startswith("no service"))
        since = int(re.match(r"no service (\d+)s", header(down)).group(1))
        later = wait_screen(running, board, lambda t: int(re.match(r"no service (\d+)s", header(t)).group(1)) >= since + 3)
        picture(board, tmp_path, "master-offline.png")
        with ServiceProcess(service.data_dir, port=service.port):  # the same service, back
            back = wait_screen(running, board, lambda t: header(t).startswith("7 nodes"))

    # the header in inverse video says what fails and since when; the last nodes read stay
    assert down.inverse[0] == "#" * 16 and later.lines[1:] == SWARM_LINES[1:]
    assert back.lines[1:] == SWARM_LINES[1:] and back.inverse[0] == " " * 16
    assert "Traceback" not in running.output


def test_wifi_down_is_shown_with_since_when_and_the_master_rejoins(service, tmp_path):
    svconf = add(service, "hall", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf, sensor=True))
    wifi_down = tmp_path / "wifi-down"

    with RunningBoard(board, {**HOME, **OLED_64, "wifi_down": str(wifi_down), "temperature": 21.0,
                              "humidity": 50.0}) as running:
        wait_screen(running, board, lambda t: "hall" in str(t))
        wifi_down.touch()  # the access point goes away
        down = wait_screen(running, board, lambda t: re.fullmatch(r"no wifi \d+s *", header(t)) is not None)
        wifi_down.unlink()
        back = wait_screen(running, board, lambda t: header(t).startswith("1 node "))

    assert down.inverse[0] == "#" * 16 and down.lines[1] == " hall    21.0 50"
    assert back.lines[:2] == ["1 node ok       ", " hall    21.0 50"]
    assert [e["ssid"] for e in running.events if e["event"] == "connect"] .count("home") >= 3  # joined, tried, rejoined


def test_master_without_the_display_right_shows_the_403_and_how_to_fix_it(service, tmp_path):
    svconf = add(service, "door", interval=10)
    board = flash(tmp_path, master_config(svconf))

    with RunningBoard(board, {**HOME, **OLED_64}) as running:
        text = wait_screen(running, board, lambda t: header(t).startswith("no right 403"))

    assert re.fullmatch(r"no right 403 \d+s", header(text).rstrip())
    assert text.lines[1:6] == ["no display right", "on the service: ", "tswarm node     ", "display         ",
                               "door on         "]
    assert text.inverse[0] == "#" * 16
    assert "Traceback" not in running.output


def test_a_screen_failing_on_the_first_drawing_is_opened_again_and_shows_the_swarm(service, tmp_path):
    """The driver's own show() at its start goes through; the master's first drawing (the second
    frame buffer written) fails with EIO, as a loose wire does: it is logged, the screen is opened
    again and the swarm shown, run() never raises (which would leave the panel blank while the board
    deep-sleeps)."""
    add(service, "attic")
    send(service, "attic", "21.5 40.0")
    svconf = add(service, "door", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf))
    oled = {"oled": {**OLED_64["oled"], "fail_data_writes": [2]}}

    with RunningBoard(board, {**HOME, **oled}) as running:
        text = wait_screen(running, board, lambda t: "attic" in str(t))

    assert text.lines[:2] == ["1 node ok       ", " attic   21.5 40"]
    assert "screen failed: OSError(5" in running.output
    assert "wake raised" not in running.output and "Traceback" not in running.output


def test_no_screen_on_i2c_is_logged_and_the_board_deep_sleeps(service, tmp_path):
    svconf = add(service, "door", interval=10)
    board = flash(tmp_path, master_config(svconf))

    result = boot(board, HOME)  # nothing on the bus

    assert "screen: nothing answers at I2C address 0x3c on sda 4 scl 5 - found []" in result.output
    assert result.slept == [{"ms": 10_000, "via": "esp.deepsleep"}]  # netconf.sleep: tried again on the next wake
    assert "Traceback" not in result.output


def test_screen_on_other_pins_than_configured_is_not_found(service, tmp_path):
    svconf = add(service, "door", interval=10)
    board = flash(tmp_path, master_config(svconf, screen={"sda": 12, "scl": 14}))

    result = boot(board, {**HOME, **OLED_64})  # the panel is wired to 4/5

    assert "nothing answers at I2C address 0x3c on sda 12 scl 14" in result.output
    assert len(result.slept) == 1


def slot(board: Path, name: str, version: str, changed: dict[str, bytes]) -> None:
    """An update as ota.py leaves it: the bundle in folder ``name`` (the flashed one's files, ``changed``
    replaced), and ota.json switched to it on trial."""
    files = {f: (board / f).read_bytes() for f in ("node.py", "ota.py", "keep.py", "master.py", "config.json")}
    install_files(board / name, {**files, **changed, "version": version})
    install_files(board, {"ota.json": json.dumps({"active": name, "previous": "", "trial": 0, "version": version})})


def ota_state(board: Path) -> dict:
    return json.loads((board / "ota.json").read_text())


def test_a_broken_master_bundle_rolls_back_to_the_flashed_one(service, tmp_path):
    svconf = add(service, "door", "--display", interval=10)
    send(service, "door", "21.0 50.0")
    board = flash(tmp_path, master_config(svconf))
    slot(board, "a", "broken-1", {"master.py": b"def run(node, config:\n"})

    with RunningBoard(board, {**HOME, **OLED_64}) as running:
        running.wait_for("rolling back")
        text = wait_screen(running, board, lambda t: "door" in str(t))  # the flashed master runs

    assert "tswarm: bundle broken-1 failed - rolling back to ''" in running.output
    assert ota_state(board) == {"active": "", "rolled_back": "broken-1"}
    assert text.lines[1] == " door    21.0 50"


def test_a_master_bundle_on_trial_is_confirmed_by_the_swarms_200(service, tmp_path):
    svconf = add(service, "door", "--display", interval=10)
    add(service, "kitchen")
    send(service, "kitchen", "21.0 40.0")
    board = flash(tmp_path, master_config(svconf))
    slot(board, "a", "good-2", {})

    with RunningBoard(board, {**HOME, **OLED_64}) as running:
        running.wait_for("bundle 'a' confirmed")
        wait_screen(running, board, lambda t: "kitchen" in str(t))

    assert ota_state(board) == {"active": "a"}


def test_a_master_bundle_on_trial_without_the_services_yes_rolls_back_after_three_boots(service, tmp_path):
    svconf = add(service, "door")  # the service will be down anyway
    config = master_config(svconf)
    config["netconf"]["sleep"] = 1
    board = flash(tmp_path, config)
    slot(board, "a", "silent-3", {})
    service.stop()  # no yes from anywhere

    for wake in (1, 2, 3):
        result = boot(board, {**HOME, **OLED_64})
        assert result.of("reset") == [{}], result.output  # the boot ends, as a wake would
        assert ota_state(board)["trial"] == wake
        assert header(screen(board)).startswith("no service")  # shown meanwhile
    with RunningBoard(board, {**HOME, **OLED_64}) as running:
        running.wait_for("master: screen", after=running.wait_for("rolling back"))  # the flashed bundle runs
    assert ota_state(board) == {"active": "", "rolled_back": "silent-3"}


def test_drawing_fits_in_a_small_heap(service, tmp_path):
    """With the heap cut to 112 KB (the 64-bit Unix port, whose objects are about twice an ESP8266's),
    the master draws 37 nodes over six pages for several refreshes without a MemoryError, and what
    a drawing allocates (gc.mem_free() before and after, logged with each refresh) stays small:
    1568 bytes here, beside the driver's 1 KB frame buffer and 17 bytes a node. Measured in this
    port: node.py takes 13.1 KB of heap once imported, master.py 9.6 KB, the ssd1306 driver
    compiled from source 7.6 KB (mip installs it precompiled on a board), requests 1.2 KB (frozen on
    the ESP ports); a master needs about 100 KB here, a sensor node's wake about 77 KB. The peak is
    the compilation of master.py after node.py: at 92-96 KB it sometimes runs out there."""
    the_swarm(service)
    for i in range(1, 31):
        add(service, f"shed-{i:02d}")
        send(service, f"shed-{i:02d}", "20.0 40.0")
    svconf = add(service, "hall", "--display", interval=10)
    board = flash(tmp_path, master_config(svconf, sensor=True))

    with RunningBoard(board, {**HOME, **OLED_64, "heap": "112k", "temperature": 22.0, "humidity": 38.0}) as running:
        wait_screen(running, board, lambda t: t.lines[0] == "37 nodes 4!  6/6")
        seen = running.wait_for("refreshed: ok")
        running.wait_for("refreshed: ok", after=seen)  # a second refresh: nothing leaks or fragments away

    assert "MemoryError" not in running.output and "Traceback" not in running.output, running.output
    figures = [tuple(map(int, m)) for m in re.findall(r"heap free (\d+) lowest while drawing (\d+) drawing took (\d+)",
                                                        running.output)]
    assert len(figures) >= 2
    for free, lowest, drawing in figures:
        assert drawing < 4096 and lowest > 16384, figures


# -- a hostile network: scripted peers (peer.py) answer what the real service never does --------------


def summary_pages(count: int, page_status=None):
    """A peer's answer: the summary of ``count`` nodes (n01, n02, ...), the page the request asks for;
    ``page_status(offset)`` may give another status for a page (None: 200)."""
    def answer(request):
        query = dict(part.split("=") for part in request.path.split("?", 1)[1].split("&"))
        offset, limit = int(query["offset"]), int(query["limit"])
        status = page_status(offset) if page_status else None
        if status:
            return http(status, {"error": "busy", "detail": "later"})
        nodes = [{"name": f"n{i:02d}", "health": "ok", "age": 5, "temperature": 20.0 + i, "humidity": 40.0,
                  "vbat": None, "low": None} for i in range(1, count + 1)][offset:offset + limit]
        return http(200, {"total": count, "offset": offset, "sleep": 10, "counts": {"ok": count}, "nodes": nodes})
    return answer


def peer_master(tmp_path: Path, peer, sensor: bool = False) -> Path:
    xauth = base64.b64encode(f"hall:{PASSWORD}".encode()).decode()
    return flash(tmp_path, master_config({"url": f"{peer.url}/api/nodes/hall", "login": "hall", "xauth": xauth},
                                         sensor=sensor))


HUGE = {"total": 1, "offset": 0, "sleep": 10, "counts": {"ok": 1}, "nodes": [], "pad": "x" * 200_000}


@pytest.mark.parametrize("answer, shows", [
    # no HTTP at all: was "error", under "joining Wi-Fi" (requests' ValueError escaped the refresh)
    (lambda r: b"garbage\r\n\r\n", "bad answer"),
    (lambda r: b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}", "bad answer"),
    # a body of 200 KB is not read (it was, whole: a MemoryError on a board's 30 KB heap)
    (lambda r: http(200, HUGE), "bad JSON"),
    # a negative total was a bytearray of negative size: "no memory"
    (lambda r: http(200, {"total": -5, "offset": 0, "sleep": 10, "counts": {}, "nodes": []}), "bad JSON"),
    (lambda r: http(404, {"error": "not_found", "detail": "x"}), "HTTP 404"),
    (lambda r: http(423, {"error": "halted", "detail": "x"}), "HTTP 423"),
    (lambda r: http(500, b"<html>oops</html>"), "HTTP 500"),
    (lambda r: http(503, {"error": "journal_unavailable", "detail": "x"}, ("Retry-After: 30",)), "busy 503"),
], ids=["garbage", "header-without-colon", "huge-body", "negative-total", "404", "423", "500", "503"])
def test_a_hostile_answer_is_shown_in_the_header_and_the_master_keeps_trying(tmp_path, answer, shows):
    with Peer(answer) as peer:
        board = peer_master(tmp_path, peer)
        with RunningBoard(board, {**HOME, **OLED_64, "heap": "112k"}) as running:
            text = wait_screen(running, board, lambda t: header(t).startswith(shows))
            running.wait_for("next in 10 s")  # min(sleep, 30): netconf.sleep here
    assert re.fullmatch(re.escape(shows) + r" \d+s *", header(text)) and text.inverse[0] == "#" * 16
    assert text.lines[1] == "no summary yet  "  # Wi-Fi is joined: no longer "joining Wi-Fi"
    assert "Traceback" not in running.output and "refresh failed" not in running.output, running.output


def test_values_no_sensor_has_are_unknown_not_a_failed_refresh(tmp_path):
    """A humidity of 1e999 (inf in MicroPython's json) made round() raise: the refresh failed ("error")."""
    doc = {"total": 1, "offset": 0, "sleep": 10, "counts": {"ok": 1}, "nodes": [
        {"name": "attic", "health": "ok", "age": 5, "temperature": -1e300, "humidity": 1e300, "vbat": None,
         "low": None}]}
    body = json.dumps(doc).replace("1e+300", "1e999").encode()
    with Peer(lambda r: http(200, body)) as peer:
        board = peer_master(tmp_path, peer)
        with RunningBoard(board, {**HOME, **OLED_64}) as running:
            text = wait_screen(running, board, lambda t: "attic" in str(t))
    assert text.lines[:2] == ["1 node ok       ", " attic     -- --"]
    assert "Traceback" not in running.output and "refresh failed" not in running.output


def test_a_later_page_failing_leaves_every_node_as_last_read(tmp_path):
    """The second page (offset 7) of a later refresh gets a 503: nodes 8 to 10 had gone from the screen
    (the count of nodes shown was reset with the first page), and their page with them."""
    fail = []
    with Peer(summary_pages(10, lambda offset: 503 if fail and offset == 7 else None)) as peer:
        board = peer_master(tmp_path, peer)
        with RunningBoard(board, {**HOME, **OLED_64}) as running:
            wait_screen(running, board, lambda t: t.lines[0] == "10 nodes ok  2/2")
            fail.append(True)
            busy = wait_screen(running, board, lambda t: header(t).startswith("busy 503") and header(t).endswith("2/2"),
                               timeout=40)
    assert busy.lines[1:4] == [" n08     28.0 40", " n09     29.0 40", " n10     30.0 40"]
    assert "Traceback" not in running.output


def test_garbage_to_its_own_reading_still_shows_the_swarm(tmp_path):
    """A master with a sensor whose PUT gets no HTTP: it was "error", and the summary not read at all."""
    pages = summary_pages(2)
    with Peer(lambda r: b"garbage\r\n\r\n" if r.method == "PUT" else pages(r)) as peer:
        board = peer_master(tmp_path, peer, sensor=True)
        with RunningBoard(board, {**HOME, **OLED_64, "temperature": 21.0, "humidity": 50.0}) as running:
            text = wait_screen(running, board, lambda t: header(t).startswith("bad answer") and "n02" in str(t))
    assert text.lines[1:3] == [" n01     21.0 40", " n02     22.0 40"]
    assert "Traceback" not in running.output and "refresh failed" not in running.output


def test_an_answer_trickled_a_byte_at_a_time_ends_the_refresh_and_the_board_resets(tmp_path):
    """Each socket read times out after 10 s, but a header line every second never does: the master
    hung for ever, its screen saying "0 nodes ok". Now the refresh's 90 s bound (a one-shot Timer, run
    20 times faster here) shows the trouble and resets the board."""
    trickle = Trickle(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", every=0.5)
    with Peer(lambda r: trickle) as peer:
        board = peer_master(tmp_path, peer)
        with RunningBoard(board, {**HOME, **OLED_64, "timer_scale": 0.05}) as running:
            running.wait_for("refresh took over 90 s")
            text = wait_screen(running, board, lambda t: header(t).startswith("no service"))
            time.sleep(0.5)
            events = running.events
    assert {"event": "timer", "id": -1, "mode": "one_shot", "period": 90_000} in events
    assert [e["event"] for e in events][-2:] == ["timer_fired", "reset"]
    assert text.inverse[0] == "#" * 16 and text.lines[1:3] == ["cannot reach    ", "the service     "]
    assert "Traceback" not in running.output
