"""Over-the-air updates: the real boot loader (firmware/main.py) and bundle (node.py, ota.py) in the
real MicroPython Unix port, against the real `tswarm serve` and its journal.

The board's flash is a folder kept across boots (each ``boot()`` is a reset or a wake); its
hardware modules are the stand-ins of standins/, and standins/_board.py counts every write to
flash and can cut the power (SIGKILL) just before any one of them. A recording relay (capture.py)
between node and service shows each request's headers and the service's answers; everything the
node is offered, fetches and reports goes through the real service.
"""
from __future__ import annotations

import json
import shutil
import time
import zlib
from pathlib import Path

import pytest

from tswarm import bundles
from tswarm.storage import open_storage
from tests.servers import ServiceProcess, run_cli, tswarm_env

from .board import FIRMWARE, Boot, boot, install, install_files
from .capture import RecordingRelay

pytestmark = pytest.mark.integration

PASSWORD = "update-me-in-the-field"
HOME = {"ssids": ["home"]}
SHIPPED = bundles.version_of(bundles.shipped())
NODE_PY = (FIRMWARE / "node.py").read_bytes()
OTA_PY = (FIRMWARE / "ota.py").read_bytes()

# bundles a test stages: node.py changed so that the new code says when it runs
GOOD = {"node.py": NODE_PY + b'\nlog("the new bundle runs")\n'}
NO_IMPORT = {"node.py": b"def wake(config:\n"}
RAISES = {"node.py": NODE_PY + b'\n\ndef wake(config):\n    raise RuntimeError("this bundle cannot wake")\n'}


def version(files: dict[str, bytes]) -> str:
    return bundles.version_of(files.items())


@pytest.fixture
def service(tmp_path_factory):
    """A `tswarm serve` of this test alone (some tests stop and start it again)."""
    data_dir = tmp_path_factory.mktemp("updates") / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir) as service:
        yield service


@pytest.fixture
def relay(service):
    with RecordingRelay(service.port) as relay:
        yield relay


def make_node(service, relay, request, *args: str) -> tuple[str, dict]:
    """(name, config) from the real `tswarm node config`; url through the relay, url_local the same
    relay (the URL that answers is the one the update is fetched from)."""
    name = f"{request.node.name[5:25].replace('_', '-').strip('-')}-{zlib.crc32(request.node.name.encode()):08x}"
    env = tswarm_env(service.data_dir, TSWARM_PUBLIC_URL=f"http://127.0.0.1:{relay.port}")
    out = run_cli(service.data_dir, "node", "config", name, "--password", PASSWORD,
                  "--wifi-ssid", "home", "--wifi-password", "home-pw", "--allow-loopback", *args, env=env).stdout
    config = json.loads(out)
    config["svconf"]["url_local"] = config["svconf"]["url"]
    return name, config


def stage(service, name: str, files: dict[str, bytes], check: bool = True) -> str:
    """Stage ``files`` for node ``name`` with the real `tswarm firmware push FOLDER --node NAME`
    (a config-patch.json with the real `tswarm node config NAME ... --push`, see push_config);
    ``check=False`` puts in the journal what the service's own checks refuse, to see what the
    board does with it. The version staged."""
    if not check:
        v = bundles.version_of(files.items())
        with open_storage(service.data_dir) as journal:
            now = time.time_ns()
            journal.add_bundle(v, sorted(files.items()), now)
            journal.stage_bundle(v, [name], now)
        return v
    folder = Path(service.data_dir).parent / f"bundle-{version(files)}"
    folder.mkdir(exist_ok=True)
    for file_name, content in files.items():
        (folder / file_name).write_bytes(content)
    out = run_cli(service.data_dir, "firmware", "push", str(folder), "--node", name).stdout
    v = out.split()[1].rstrip(":")
    assert v == version(files) and f"staged for 1 node(s): {name}" in out, out
    return v


def push_config(service, name: str, *options: str) -> str:
    """`tswarm node config NAME OPTIONS --push`: the version of the config patch staged."""
    out = run_cli(service.data_dir, "node", "config", name, *options, "--push").stdout
    assert out.startswith("staged config change "), out
    return out.split()[3]


def status(service, name: str) -> dict:
    """The node's line of the real `tswarm firmware status --json`."""
    rows = json.loads(run_cli(service.data_dir, "firmware", "status", "--json").stdout)
    return next(row for row in rows if row["node"] == name)


def exported(service, name: str) -> list[tuple[float, float]]:
    out = run_cli(service.data_dir, "export", "--node", name, "--format", "ndjson").stdout
    return [(row["temperature"], row["humidity"]) for row in map(json.loads, out.splitlines())]


def headers(exchange) -> dict[str, str]:
    head = exchange.request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in head)


def answer(exchange) -> dict:
    return json.loads(exchange.response.split(b"\r\n\r\n", 1)[1])


def seen(relay) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request since the last look."""
    return [(e.method, e.request.split(b" ", 2)[1].decode(), e.status) for e in relay.take()]


def board_state(board: Path) -> dict:
    return json.loads((board / "ota.json").read_text())


def assert_clean(result: Boot) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.returncode == 0, result.output
    assert len(result.slept) == 1, result.output


# -- an update, start to finish -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["esp8266", "esp32"])
def test_staged_update_is_fetched_in_the_same_wake_runs_on_the_next_and_shows_as_updated(
        service, relay, request, tmp_path, kind):
    name, config = make_node(service, relay, request, "--board", kind)
    board = install(tmp_path / "board", config)
    here = {**HOME, "board": kind}  # the board the stand-ins play
    first = boot(board, {**here, "temperature": 20.5})
    assert_clean(first)
    put, post = relay.take()
    assert headers(put)["X-Tswarm-Firmware"] == SHIPPED and "X-Tswarm-Rolled-Back" not in headers(put)
    assert "update" not in answer(post) and answer(post)["sleep"] == 300
    assert status(service, name)["running"] == SHIPPED

    v = stage(service, name, GOOD)
    second = boot(board, {**here, "temperature": 21.5})
    assert_clean(second)
    assert seen(relay) == [("PUT", f"/api/nodes/{name}", 202), ("GET", f"/api/nodes/{name}/firmware/{v}/node.py", 200)]
    assert board_state(board) == {"active": "a", "previous": "", "trial": 0, "version": v}
    assert (board / "a" / "node.py").read_bytes() == GOOD["node.py"]
    assert (board / "a" / "ota.py").read_bytes() == OTA_PY  # the other file of the running bundle
    assert json.loads((board / "a" / "config.json").read_text()) == config
    assert (board / "a" / "version").read_text() == v
    assert (board / "node.py").read_bytes() == NODE_PY  # the flashed bundle, kept for a rollback
    assert "the new bundle runs" not in second.output

    third = boot(board, {**here, "temperature": 22.5})
    assert_clean(third)
    assert "the new bundle runs" in third.output
    (put,) = relay.take()
    assert headers(put)["X-Tswarm-Firmware"] == v and put.status == 202 and "update" not in answer(put)
    assert board_state(board) == {"active": "a"}  # the 202 confirmed it
    shown = status(service, name)
    assert (shown["running"], shown["staged"], shown["outcome"]) == (v, v, "updated")
    assert shown["summary"] == f"updated {shown['outcome_at']}"

    fourth = boot(board, {**here, "temperature": 23.5})
    assert "the new bundle runs" in fourth.output and board_state(board) == {"active": "a"}
    assert seen(relay) == [("PUT", f"/api/nodes/{name}", 202)]
    assert exported(service, name) == [(20.5, 45.0), (21.5, 45.0), (22.5, 45.0), (23.5, 45.0)]


def test_a_second_update_goes_to_the_other_slot_and_a_config_patch_merges_into_the_running_config(
        service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, HOME)
    v1 = stage(service, name, GOOD)
    boot(board, HOME)
    boot(board, HOME)
    assert board_state(board) == {"active": "a"}

    patch = {"netconf": {"ssid": ["home", "garage"], "password": ["home-pw", "garage-pw"], "dns": "192.168.4.9"},
             "svconf": {"login": "someone-else", "xauth": "c29tZW9uZTplbHNl"}}  # the board ignores credentials
    content = json.dumps(patch).encode()
    v2 = stage(service, name, {bundles.CONFIG_PATCH: content}, check=False)
    relay.take()
    boot(board, HOME)
    assert seen(relay) == [("PUT", f"/api/nodes/{name}", 202),
                           ("GET", f"/api/nodes/{name}/firmware/{v2}/config-patch.json", 200)]
    assert board_state(board) == {"active": "b", "previous": "a", "trial": 0, "version": v2}
    assert sorted(p.name for p in (board / "b").iterdir()) == ["config.json", "keep.py", "master.py", "node.py", "ota.py",
                                                               "version"]
    assert (board / "b" / "node.py").read_bytes() == GOOD["node.py"]  # the running bundle's code, not the flashed one
    expected = json.loads(json.dumps(config))
    expected["netconf"].update(ssid=["home", "garage"], password=["home-pw", "garage-pw"], dns="192.168.4.9")
    assert json.loads((board / "b" / "config.json").read_text()) == expected

    result = boot(board, {"ssids": ["garage"]})  # only the network the patch added is in reach
    assert [e["ssid"] for e in result.of("connect")] == ["home", "garage"]
    assert board_state(board) == {"active": "b"}
    assert (status(service, name)["running"], status(service, name)["outcome"]) == (v2, "updated")
    assert v1 != v2


# -- rollbacks --------------------------------------------------------------------------------------


def updated_to(service, relay, request, tmp_path, files) -> tuple[str, dict, Path, str]:
    """A board that got ``files`` (a dict of files, or options of `node config --push`) in a wake
    and switched to them (on trial from its next wake)."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, HOME)
    v = stage(service, name, files) if isinstance(files, dict) else push_config(service, name, *files)
    boot(board, HOME)
    assert board_state(board)["active"] == "a", "the update was not taken"
    relay.take()
    return name, config, board, v


@pytest.mark.parametrize("bundle", ["node.py does not import", "wake raises"])
def test_a_bundle_that_cannot_run_is_rolled_back_at_once_and_the_reading_still_sent(service, relay, request, tmp_path, bundle):
    files = NO_IMPORT if bundle == "node.py does not import" else RAISES
    name, config, board, v = updated_to(service, relay, request, tmp_path, files)

    result = boot(board, {**HOME, "temperature": 18.0})
    assert ("cannot import node.py" if files is NO_IMPORT else "this bundle cannot wake") in result.output
    assert f"bundle {v} failed - rolling back to ''" in result.output
    assert result.returncode == 0 and len(result.slept) == 1
    (put,) = relay.take()
    assert put.status == 202
    assert headers(put)["X-Tswarm-Firmware"] == SHIPPED and headers(put)["X-Tswarm-Rolled-Back"] == v
    assert "update" not in answer(put)  # not offered again until staged again
    assert board_state(board) == {"active": ""}  # the 202 heard the rollback
    shown = status(service, name)
    assert (shown["running"], shown["rolled_back_from"], shown["outcome"]) == (SHIPPED, v, "rolled_back")

    again = boot(board, {**HOME, "temperature": 19.0})
    assert_clean(again)
    (put,) = relay.take()
    assert "X-Tswarm-Rolled-Back" not in headers(put) and "update" not in answer(put)
    assert exported(service, name)[-2:] == [(18.0, 45.0), (19.0, 45.0)]


def test_a_wifi_change_to_a_network_that_does_not_exist_is_rolled_back_after_three_wakes(service, relay, request, tmp_path):
    name, config, board, v = updated_to(service, relay, request, tmp_path,
                                        ("--wifi-ssid", "moved-house", "--wifi-password", "nobody-knows"))
    assert json.loads((board / "a" / "config.json").read_text())["netconf"]["ssid"] == ["moved-house"]

    for wake in (1, 2, 3):
        result = boot(board, HOME)
        assert [e["ssid"] for e in result.of("connect")] == ["moved-house"]
        assert result.slept == [{"ms": 300_000, "via": "esp.deepsleep"}]  # netconf.sleep: no answer came
        assert board_state(board)["trial"] == wake
    assert relay.take() == []

    result = boot(board, {**HOME, "temperature": 25.0})
    assert f"bundle {v} had 3 wakes without a 202/423 - rolling back to ''" in result.output
    assert [e["ssid"] for e in result.of("connect")] == ["home"]
    # the three readings kept in RTC memory first, then this one: all of this wake say so
    put, *rest = relay.take()
    assert (put.status, headers(put)["X-Tswarm-Rolled-Back"]) == (202, v)
    assert [(e.status, headers(e)["X-Tswarm-Rolled-Back"]) for e in rest] == [(202, v)] * 3
    assert status(service, name)["outcome"] == "rolled_back"
    assert board_state(board) == {"active": ""}
    assert exported(service, name)[-1] == (25.0, 45.0)


def test_the_rollback_is_reported_until_a_202_arrives(service, relay, request, tmp_path):
    name, config, board, v = updated_to(service, relay, request, tmp_path, NO_IMPORT)
    boot(board, {"ssids": []})  # rolled back, but nothing reached the service
    assert board_state(board) == {"active": "", "rolled_back": v}
    boot(board, HOME)
    put, fresh = relay.take()  # the reading kept in RTC memory first
    assert headers(put)["X-Tswarm-Rolled-Back"] == v and put.status == 202
    assert board_state(board) == {"active": ""}


def test_an_update_that_had_done_well_but_no_longer_imports_gives_way_to_the_flashed_bundle(
        service, relay, request, tmp_path):
    """Its files damaged on the board (a flash cell gone bad): the flashed bundle at the top is whole."""
    name, config, board, v = updated_to(service, relay, request, tmp_path, GOOD)
    boot(board, HOME)
    assert board_state(board) == {"active": "a"}
    (board / "a" / "node.py").write_bytes(b"\x00\x00 not python any more")
    relay.take()
    result = boot(board, {**HOME, "temperature": 30.5})
    assert f"bundle {v} failed - rolling back to ''" in result.output and len(result.slept) == 1
    (put,) = relay.take()
    assert (put.status, headers(put)["X-Tswarm-Firmware"], headers(put)["X-Tswarm-Rolled-Back"]) == (202, SHIPPED, v)
    assert exported(service, name)[-1] == (30.5, 45.0)


# -- what a 202/423 says beyond its status ------------------------------------------------------------


def test_the_answers_sleep_wins_over_netconf_sleep(service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    assert config["netconf"]["sleep"] == 300
    run_cli(service.data_dir, "node", "interval", name, "1200")
    board = install(tmp_path / "board", config)
    assert boot(board, HOME).slept == [{"ms": 1_200_000, "via": "esp.deepsleep"}]
    assert boot(board, {"ssids": []}).slept == [{"ms": 300_000, "via": "esp.deepsleep"}]  # no answer: netconf.sleep
    relay.take()


def test_a_halted_node_stays_awake_as_long_as_the_423_says(tmp_path, request):
    """TSWARM_HALT_AWAKE=45 and no netconf.awake: 45 s (Ctrl-C ends the wait, as mpremote's does)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_HALT_AWAKE="45")) as service:
        with RecordingRelay(service.port) as relay:
            name, config = make_node(service, relay, request)
            board = install(tmp_path / "board", config)
            run_cli(service.data_dir, "halt", name)
            result = boot(board, HOME, interrupt_after="halted:", repl_input="print('awake', status)\n")
            assert "tswarm: halted: awake for 45 s" in result.output and "awake 423" in result.output
            config["netconf"]["awake"] = 20  # the shorter of the two
            result = boot(install(board, config), HOME, interrupt_after="halted:", repl_input="")
            assert "tswarm: halted: awake for 20 s" in result.output
            assert [(e.status, answer(e).get("awake")) for e in relay.take()] == [(405, None), (423, 45), (423, 45)]


# -- downloads that fail leave the running bundle alone -----------------------------------------------


def test_a_download_cut_off_by_the_service_going_away_leaves_the_old_bundle_and_the_next_wake_finishes(
        service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, HOME)
    big = {"node.py": GOOD["node.py"], "ota.py": OTA_PY + b"\n# a second file to fetch\n"}
    v = stage(service, name, big)
    flashed = {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()}
    resume = tmp_path / "resume"

    def service_goes_away():
        service.kill()
        resume.touch()

    # write 1 makes a/, write 2 opens a/node.py once its GET answered: the service dies there
    result = boot(board, {**HOME, "pause_at_write": 2, "resume": str(resume)},
                  on_line=("tswarm-test: paused before write 2", service_goes_away))
    assert "update failed" in result.output and len(result.slept) == 1
    assert {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()} == flashed  # ota.json included

    service.start()
    relay.take()
    boot(board, HOME)
    assert seen(relay) == [("PUT", f"/api/nodes/{name}", 202),
                           ("GET", f"/api/nodes/{name}/firmware/{v}/node.py", 200),
                           ("GET", f"/api/nodes/{name}/firmware/{v}/ota.py", 200)]
    assert board_state(board)["active"] == "a"
    assert "the new bundle runs" in boot(board, HOME).output
    assert status(service, name)["running"] == v


def test_a_download_cut_off_in_the_middle_of_a_file_leaves_the_old_bundle(service, request, tmp_path):
    """The connection drops 4000 bytes into the answer of node.py (the real service answers; the
    relay between stops forwarding and closes, as a Wi-Fi going away would)."""
    with RecordingRelay(service.port, cut=(b"/firmware/", 4000)) as relay:
        name, config = make_node(service, relay, request)
        board = install(tmp_path / "board", config)
        boot(board, HOME)
        stage(service, name, GOOD)
        flashed = {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()}
        result = boot(board, HOME)
        assert "update failed: ValueError('cut off after" in result.output, result.output
        assert len(result.slept) == 1
        assert {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()} == flashed
        relay.cut = None
        boot(board, HOME)
        assert board_state(board)["active"] == "a"
        assert "the new bundle runs" in boot(board, HOME).output


def test_a_file_with_a_wrong_hash_leaves_the_old_bundle(service, relay, request, tmp_path):
    """The journal's copy of the file changed under its recorded SHA-256 (what a bad disk or a proxy
    rewriting the body would do): the board checks every byte it wrote."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    boot(board, HOME)
    v = stage(service, name, GOOD)
    with open_storage(service.data_dir) as journal:
        journal.conn.execute("UPDATE bundle_files SET content = ? WHERE version = ?",
                             (GOOD["node.py"].replace(b"new bundle", b"bad bundle"), v))
        journal.conn.commit()
    flashed = {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()}

    for _ in range(2):  # every wake tries again, and gives up again
        result = boot(board, HOME)
        assert "update failed: ValueError('SHA-256 differs',)" in result.output
        assert {p.name: p.read_bytes() for p in board.iterdir() if p.is_file()} == flashed
        assert seen(relay)[-1] == ("GET", f"/api/nodes/{name}/firmware/{v}/node.py", 200)
    assert "the new bundle runs" not in boot(board, HOME).output


# -- a power cut at any write -----------------------------------------------------------------------


def test_a_power_cut_before_any_write_of_an_update_leaves_a_whole_bundle_and_the_update_finishes(
        service, relay, request, tmp_path):
    """A board running a first update (in a/) takes a second one (into b/). Once for every write to
    flash that second update makes (the downloads, the copies, config.json, version, ota.json) and
    inside every file, the power goes just before it; the next boots run the first update or the
    second, whole (node.py, ota.py and version of one bundle; never the flashed one, nor a mix),
    and finish the update."""
    name, config = make_node(service, relay, request)
    start = install(tmp_path / "start", config)
    boot(start, HOME)
    first = {"node.py": NODE_PY + b'\nlog("bundle one runs")\n'}
    v1 = stage(service, name, first)
    boot(start, HOME)
    boot(start, HOME)
    assert board_state(start) == {"active": "a"}
    second = {"node.py": NODE_PY + b'\nlog("bundle two runs")\n', "ota.py": OTA_PY + b"\n# bundle two\n"}
    v2 = stage(service, name, second)
    marks = {v1: "bundle one runs", v2: "bundle two runs"}

    dry = tmp_path / "dry"
    shutil.copytree(start, dry)
    writes = boot(dry, HOME).of("write")
    assert board_state(dry) == {"active": "b", "previous": "a", "trial": 0, "version": v2}
    files = [(e["op"], e["path"]) for e in writes if e["op"] != "write"]
    # the running bundle's other files (keep.py, master.py) come along in the order os.listdir gives
    assert files[:3] + sorted(files[3:5]) + files[5:] == [
        ("mkdir", "b"), ("open", "b/node.py"), ("open", "b/ota.py"), ("open", "b/keep.py"), ("open", "b/master.py"),
        ("open", "b/config.json"), ("open", "b/version"), ("open", "ota.json.tmp"), ("rename", "ota.json.tmp")]
    # a cut before every file operation, and inside each file: before its first and its last write()
    chunks = [e for e in writes if e["op"] == "write"]
    cuts = sorted({e["n"] for e in writes if e["op"] != "write"}
                  | {min(e["n"] for e in chunks if e["path"] == path) for _, path in files[1:8]}
                  | {max(e["n"] for e in chunks if e["path"] == path) for _, path in files[1:8]})
    assert len(cuts) >= 14

    for cut in cuts:
        board = tmp_path / f"cut-{cut}"
        shutil.copytree(start, board)
        result = boot(board, {**HOME, "kill_at_write": cut})
        assert f"tswarm-test: power cut before write {cut}" in result.output
        assert result.returncode == -9 and result.slept == []
        relay.take()
        runs = []
        for _ in range(3):  # at most: the update again, its trial wake, a confirmed wake
            after = boot(board, HOME)
            assert_clean(after)
            (put, *gets) = relay.take()
            assert put.status == 202
            running = headers(put)["X-Tswarm-Firmware"]
            assert running in marks, (cut, writes[cut - 1], running)
            assert [m for m in marks.values() if m in after.output] == [marks[running]], after.output  # never a mix
            runs.append(running)
        assert runs[-1] == v2, (cut, writes[cut - 1], runs)
        assert board_state(board) == {"active": "b"}
        assert (board / "b" / "node.py").read_bytes() == second["node.py"]
    assert status(service, name)["outcome"] == "updated"


def test_a_state_file_left_only_as_its_tmp_by_a_cut_rename_is_read(service, relay, request, tmp_path):
    """FAT renames over a file by removing it first: a cut between leaves ota.json.tmp alone."""
    name, config, board, v = updated_to(service, relay, request, tmp_path, GOOD)
    (board / "ota.json").rename(board / "ota.json.tmp")
    result = boot(board, HOME)
    assert "the new bundle runs" in result.output
    assert board_state(board) == {"active": "a"} and not (board / "ota.json.tmp").exists()


# -- boards that know nothing of updates ------------------------------------------------------------


def today_firmware() -> dict[str, bytes]:
    """main.py and node.py as boards in the field run them: the firmware before the boot loader
    (tests/firmware/before_ota/, copied from main when issue 14 began). It sends no version and reads
    only the status code."""
    return {p.name: p.read_bytes() for p in (Path(__file__).parent / "before_ota").glob("*.py")}


def test_todays_firmware_sees_no_change_whatever_is_staged(service, relay, request, tmp_path):
    name, config = make_node(service, relay, request)
    board = install_files(tmp_path / "board", {**today_firmware(), "config.json": json.dumps(config)})
    boot(board, HOME)
    relay.take()
    stage(service, name, GOOD)
    for _ in range(2):
        result = boot(board, {**HOME, "temperature": 26.0})
        (put,) = relay.take()
        assert put.status == 202 and "X-Tswarm-Firmware" not in headers(put)
        assert "update" not in answer(put)
        assert result.slept == [{"ms": 300_000, "via": "esp.deepsleep"}]
    assert sorted(p.name for p in board.iterdir()) == ["config.json", "main.py", "node.py"]
    assert status(service, name)["outcome"] == "pending"


def test_an_update_fits_in_a_small_heap(service, relay, request, tmp_path):
    """The update streams each file in 512-byte chunks and hashes it on the way: with the heap cut to
    104 KB (the 64-bit Unix port; a plain wake of this firmware needs about 77 KB here, 72 KB before
    keep.py, of today's 65 KB, and the first boot of the new bundle about 76 KB), the update is fetched,
    boots and is confirmed: the wake lets go of keep.py before it imports ota.py. At 80-88 KB an update
    or its confirmation sometimes runs out (MemoryError, depending on how the heap fragments: the node's
    name, the relay's port): the update path is at the edge of a small heap, so the test keeps a margin.
    It was 96 KB until the wake's bound (its machine.Timer) and the guard against redirects grew node.py
    by about 1 KB: this test's update then ran out at 96 and 100 KB (the flashed node.py of before at 92),
    and at 104 KB in CI once the version checks grew it by 600 bytes: just before ``import ota`` a heap
    of 112 KB had 66 KB free, in pieces of 3.6 KB at most. With a gc.collect() just before that import
    the update goes through at 92 KB here; at 88 KB the new bundle's first boot runs out in its node.py."""
    name, config = make_node(service, relay, request)
    board = install(tmp_path / "board", config)
    small = {**HOME, "heap": "104k"}
    boot(board, small)
    v = stage(service, name, {"node.py": GOOD["node.py"], "ota.py": OTA_PY + b"\n# changed too\n"})
    result = boot(board, small)
    assert "MemoryError" not in result.output and board_state(board)["active"] == "a", result.output
    result = boot(board, small)
    assert "the new bundle runs" in result.output and board_state(board) == {"active": "a"}, result.output
    assert status(service, name)["running"] == v
