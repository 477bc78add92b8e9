"""`tswarm firmware push`, `tswarm firmware status`, `tswarm node config --push` and the firmware
columns of `tswarm node list`: their effect, checked through the journal, and their errors."""
import hashlib
import json

import pytest

from tswarm import auth, bundles
from tswarm.bundles import masked

from .conftest import open_journal

pytestmark = pytest.mark.engines

T = 1_764_000_000 * 10**9


@pytest.fixture
def two_nodes(run, data_dir):
    for name in ("a", "b"):
        assert run("node", "add", name, "--password", f"pw-{name}").exit_code == 0
    return data_dir


def staged(data_dir) -> dict:
    with open_journal(data_dir) as journal:
        return {n.name: n.firmware.staged for n in journal.list_nodes()}


def bundle_of(data_dir, version) -> dict:
    with open_journal(data_dir) as journal:
        return {f.name: journal.bundle_file(version, f.name) for f in journal.bundle_files(version)}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "fw"
    d.mkdir()
    (d / "node.py").write_bytes(b"print('node')\n")
    (d / "ota.py").write_bytes(b"# ota\n")
    (d / "main.py").write_bytes(b"# the loader: never pushed\n")
    (d / "notes.txt").write_bytes(b"not firmware")
    return d


def test_firmware_push_stages_the_py_files_of_a_folder_for_the_nodes_given(run, two_nodes, folder):
    files = [("node.py", b"print('node')\n"), ("ota.py", b"# ota\n")]
    version = bundles.version_of(files)
    result = run("firmware", "push", str(folder), "--node", "a")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"bundle {version}: 2 file(s), 20 bytes",
        f"  node.py  14  sha256 {hashlib.sha256(files[0][1]).hexdigest()[:16]}",
        f"  ota.py  6  sha256 {hashlib.sha256(files[1][1]).hexdigest()[:16]}",
        "staged for 1 node(s): a",
        "each fetches it on its next wake ('tswarm firmware status' shows how it went)",
    ]
    assert staged(two_nodes) == {"a": version, "b": None}
    assert bundle_of(two_nodes, version) == dict(files)


def test_firmware_push_without_a_folder_stages_the_shipped_firmware_for_every_node(run, two_nodes):
    result = run("firmware", "push", "--all")
    assert result.exit_code == 0, result.output
    version = bundles.version_of(bundles.shipped())
    assert staged(two_nodes) == {"a": version, "b": version}
    assert "staged for 2 node(s): a, b" in result.stdout
    assert bundle_of(two_nodes, version) == dict(bundles.shipped())


def test_firmware_push_says_when_it_replaces_a_pending_update(run, two_nodes, folder):
    run("firmware", "push", str(folder), "--node", "a")
    first = staged(two_nodes)["a"]
    (folder / "node.py").write_bytes(b"print('fixed')\n")
    result = run("firmware", "push", str(folder), "--node", "a", "--node", "b")
    assert result.exit_code == 0
    assert f"  a: replaces {first}, which was pending (not yet running)" in result.stdout.splitlines()
    assert "b: replaces" not in result.stdout
    assert staged(two_nodes)["a"] == staged(two_nodes)["b"] != first


@pytest.mark.parametrize("args", [[], ["--all", "--node", "a"]], ids=["neither", "both"])
def test_firmware_push_needs_either_node_or_all(run, two_nodes, args):
    result = run("firmware", "push", *args)
    assert result.exit_code == 2 and "Error: give --node NAME (repeat for several) or --all, not both" in result.stderr
    assert staged(two_nodes) == {"a": None, "b": None}


def test_firmware_push_to_a_node_not_registered_stages_nothing(run, two_nodes, folder):
    result = run("firmware", "push", str(folder), "--node", "a", "--node", "ghost")
    assert result.exit_code == 1
    assert result.stderr == "Error: no node named 'ghost'; 'tswarm node list' shows them; nothing staged\n"
    assert staged(two_nodes) == {"a": None, "b": None}


def test_firmware_push_to_every_node_of_none_is_an_error(run, data_dir, folder):
    run("node", "add", "a")
    run("node", "remove", "a")
    result = run("firmware", "push", str(folder), "--all")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no node is registered")


@pytest.mark.parametrize("setup, says", [
    (lambda d: None, "bundle does not exist"),
    (lambda d: d.write_bytes(b"print('a file')\n"), "bundle is not a folder"),
    (lambda d: d.mkdir(), "holds no .py file"),
    (lambda d: (d.mkdir(), (d / "big.py").write_bytes(b"x" * (bundles.MAX_FILE_BYTES + 1))), "per file"),
    (lambda d: (d.mkdir(), (d / "a b.py").write_bytes(b"")), "no folders"),
], ids=["missing", "a-file", "empty", "too-big", "bad-name"])
def test_firmware_push_of_a_folder_that_is_no_bundle_is_one_error_line(run, two_nodes, tmp_path, setup, says):
    d = tmp_path / "bundle"
    setup(d)
    result = run("firmware", "push", str(d), "--all")
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and says in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert staged(two_nodes) == {"a": None, "b": None}


def test_firmware_push_refuses_a_bad_node_name(run, two_nodes, folder):
    result = run("firmware", "push", str(folder), "--node", "../x")
    assert result.exit_code == 2 and "node names are" in result.stderr


def test_firmware_status_shows_running_staged_and_the_outcome(run, two_nodes, folder):
    run("firmware", "push", str(folder), "--node", "a")
    version = staged(two_nodes)["a"]
    with open_journal(two_nodes) as journal:
        journal.report_firmware("b", "v0", None, T)
    lines = run("firmware", "status").stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["NAME", "RUNNING", "STAGED", "OUTCOME"], ["a", "-", version, "pending"], ["b", "v0", "-", "current"],
    ]
    with open_journal(two_nodes) as journal:
        journal.report_firmware("a", version, None, T + 10**9)
    doc = json.loads(run("firmware", "status", "--json").stdout)
    assert doc[0] == {
        "node": "a", "running": version, "reported_at": "2025-11-24T16:00:01.000000000Z", "staged": version,
        "staged_at": doc[0]["staged_at"], "outcome": "updated", "outcome_at": "2025-11-24T16:00:01.000000000Z",
        "rolled_back_from": None, "summary": "updated 2025-11-24T16:00:01.000000000Z",
    }
    assert [d["node"] for d in doc] == ["a", "b"]
    with open_journal(two_nodes) as journal:
        journal.report_firmware("a", "v0", version, T + 2 * 10**9)
    assert run("firmware", "status").stdout.splitlines()[1].split() == [
        "a", "v0", version, "rolled", "back", "from", version, "2025-11-24T16:00:02.000000000Z",
    ]


def test_node_list_shows_the_firmware_and_the_update(run, two_nodes, folder):
    run("firmware", "push", str(folder), "--node", "a")
    version = staged(two_nodes)["a"]
    with open_journal(two_nodes) as journal:
        journal.report_firmware("a", "v0", None, T)
    lines = run("node", "list").stdout.splitlines()
    assert lines[0].split()[-2:] == ["FIRMWARE", "UPDATE"]
    assert lines[1].split()[-3:] == ["v0", "pending", version]
    assert lines[2].split()[-2:] == ["-", "-"]
    doc = json.loads(run("node", "list", "--json").stdout)
    assert doc[0]["firmware"]["staged"] == version and doc[0]["firmware"]["running"] == "v0"


# -- tswarm node config --push ----------------------------------------------------------------------


def pushed_patch(data_dir, name="a") -> dict:
    version = staged(data_dir)[name]
    files = bundle_of(data_dir, version)
    assert list(files) == [bundles.CONFIG_PATCH]
    return json.loads(files[bundles.CONFIG_PATCH])


PUSHES = {
    "wifi": (["--wifi-ssid", "home", "--wifi-password", "pw", "--wifi-ssid", "cafe", "--wifi-password", ""],
             {"netconf": {"ssid": ["home", "cafe"], "password": ["pw", ""]}}),
    "sleep": (["--sleep", "900"], {"netconf": {"sleep": 900}}),
    "static-ip": (["--ip", "192.168.1.50", "--gateway", "192.168.1.1", "--dns", "1.1.1.1", "--netmask", "255.255.0.0"],
                  {"netconf": {"ip": "192.168.1.50", "gateway": "192.168.1.1", "dns": "1.1.1.1", "netmask": "255.255.0.0"}}),
    "sensor-and-pin": (["--sensor", "dht11", "--dht-pin", "4"], {"modules": {"sensor": "dht11", "pins": {"dht": 4}}}),
    "leds": (["--leds", "1,2,3", "--leds-active-low"], {"modules": {"leds": {"red": 1, "green": 2, "blue": 3, "active_low": True}}}),
    "no-leds": (["--leds", "none"], {"modules": {"leds": []}}),
    "active-low-alone": (["--leds-active-low"], {"modules": {"leds": {"active_low": True}}}),
    "default-value-typed": (["--sensor", "dht22"], {"modules": {"sensor": "dht22"}}),
    "battery-divider": (["--battery", "35", "--battery-ratio", "2"], {"modules": {"battery": {"adc": 35, "ratio": 2.0}}}),
    "battery-vcc": (["--battery", "VCC"], {"modules": {"battery": {"adc": "vcc"}}}),
}


@pytest.mark.parametrize("args, patch", PUSHES.values(), ids=PUSHES.keys())
def test_node_config_push_stages_only_the_options_given(run, two_nodes, args, patch):
    with open_journal(two_nodes) as journal:
        password_hash = journal.node_auth("a").password_hash
    result = run("node", "config", "a", "--push", *args)
    assert result.exit_code == 0, result.output
    assert pushed_patch(two_nodes) == patch
    version = staged(two_nodes)["a"]
    assert result.stdout.splitlines()[0] == f"staged config change {version} for a: {json.dumps(masked(patch), sort_keys=True)}"
    assert "{" not in result.stdout.splitlines()[-1]  # no config.json printed
    with open_journal(two_nodes) as journal:
        assert journal.node_auth("a").password_hash == password_hash  # the password stays
        assert auth.verify_password("pw-a", journal.node_auth("a").password_hash)
    assert staged(two_nodes)["b"] is None


def test_a_pushed_wifi_password_is_never_printed(run, two_nodes):
    result = run("node", "config", "a", "--push", "--wifi-ssid", "home", "--wifi-password", "s3cret-wifi")
    assert result.exit_code == 0, result.output
    assert "s3cret-wifi" not in result.output
    assert '"password": ["***"]' in result.stdout
    assert pushed_patch(two_nodes)["netconf"]["password"] == ["s3cret-wifi"]  # the board gets it all the same


def test_merged_on_a_board_the_pushed_patch_changes_only_those_keys(run, two_nodes):
    board = {"netconf": {"ssid": ["old"], "password": ["old-pw"], "sleep": 300}, "modules": {"board": "esp8266", "pins": {"dht": 5}},
             "svconf": {"login": "a", "xauth": "x"}}
    run("node", "config", "a", "--push", "--wifi-ssid", "new", "--wifi-password", "new-pw")
    assert bundles.merge_config(board, pushed_patch(two_nodes)) == {
        **board, "netconf": {"ssid": ["new"], "password": ["new-pw"], "sleep": 300},
    }


REFUSED = {
    "nothing": ([], 2, "--push needs at least one board option"),
    "password": (["--sleep", "60", "--password", "x"], 2, "a config push never changes the node's password"),
    "board": (["--board", "esp32"], 2, "a board does not change kind"),
    "ssid-alone": (["--wifi-ssid", "x"], 2, "1 --wifi-ssid but 0 --wifi-password"),
    "password-alone": (["--wifi-password", "x"], 2, "0 --wifi-ssid but 1 --wifi-password"),
    "bad-ip": (["--ip", "300.1.1.1"], 2, "Invalid value for '--ip': '300.1.1.1' is not an IPv4 address"),
    "non-contiguous-netmask": (["--netmask", "255.0.255.0"], 2, "Invalid value for '--netmask': '255.0.255.0' is not a netmask"),
    "host-mask": (["--netmask", "0.0.0.255"], 2, "'0.0.0.255' is not a netmask"),
    "negative-dht-pin": (["--dht-pin", "-3"], 2, "Invalid value for '--dht-pin': -3 is not in the range x>=0."),
    "short-sleep": (["--sleep", "5"], 2, "must be 10 to 604800 seconds"),
    "bad-leds": (["--leds", "1,2"], 2, "three GPIO numbers"),
    "active-low-no-leds": (["--leds", "none", "--leds-active-low"], 2, "there is no LED"),
    "battery-ratio-alone": (["--battery-ratio", "2"], 2, "--battery-ratio with --push needs --battery"),
    "battery-not-a-pin": (["--battery", "A0"], 2, "give 'vcc' or an ADC pin number like 0 or 35"),
    "battery-ratio-zero": (["--battery", "0", "--battery-ratio", "0"], 2, "--battery-ratio must be above 0"),
    # before: staged, and the board rolled back once it could not join the network
    "empty-ssid": (["--wifi-ssid", "", "--wifi-password", "x"], 2, "--wifi-ssid must be 1 to 32 bytes (a network name), got 0"),
    "long-ssid": (["--wifi-ssid", "s" * 33, "--wifi-password", "x"], 2, "--wifi-ssid must be 1 to 32 bytes"),
    "ssid-not-utf8": (["--wifi-ssid", "home\udcff", "--wifi-password", "x"], 2, "--wifi-ssid 'home\\udcff' is not UTF-8 text"),
    "long-wifi-password": (["--wifi-ssid", "home", "--wifi-password", "p" * 65], 2, "--wifi-password must be 0 to 64 bytes"),
}


@pytest.mark.parametrize("args, code, says", REFUSED.values(), ids=REFUSED.keys())
def test_node_config_push_refuses_what_it_cannot_push_and_stages_nothing(run, two_nodes, args, code, says):
    result = run("node", "config", "a", "--push", *args)
    assert result.exit_code == code and says in result.stderr, result.output
    assert "Traceback" not in result.output
    assert staged(two_nodes) == {"a": None, "b": None}


def test_node_config_push_may_leave_the_networks_out(run, two_nodes):
    """A patch of a node in the field: no --wifi-ssid keeps the board's networks (a whole config.json
    needs one: tests/test_flash.py)."""
    result = run("node", "config", "a", "--push", "--dht-pin", "14")
    assert result.exit_code == 0, result.output
    assert pushed_patch(two_nodes) == {"modules": {"pins": {"dht": 14}}}


def test_node_config_push_never_registers_a_node(run, two_nodes):
    result = run("node", "config", "ghost", "--push", "--sleep", "60")
    assert result.exit_code == 1
    assert result.stderr == "Error: no node named 'ghost'; 'tswarm node list' shows them; nothing staged\n"
    with open_journal(two_nodes) as journal:
        assert [n.name for n in journal.list_nodes()] == ["a", "b"]


def test_firmware_cancel_unstages_the_nodes_given(run, two_nodes):
    assert run("firmware", "push", "--all").exit_code == 0
    result = run("firmware", "cancel", "--node", "a")
    assert result.exit_code == 0, result.output
    assert result.stdout == "nothing staged now for 1 node(s): a\n"
    assert staged(two_nodes)["a"] is None and staged(two_nodes)["b"] is not None
    assert run("firmware", "cancel", "--all").exit_code == 0
    assert staged(two_nodes) == {"a": None, "b": None}


@pytest.mark.parametrize("args, code, message", [
    ([], 2, "give --node NAME (repeat for several) or --all, not both"),
    (["--all", "--node", "a"], 2, "give --node NAME (repeat for several) or --all, not both"),
    (["--node", "a", "--node", "ghost"], 1, "no node named 'ghost'"),
    (["--node", "bad name"], 2, "node names are"),
])
def test_firmware_cancel_refuses_and_cancels_nothing(run, two_nodes, args, code, message):
    assert run("firmware", "push", "--all").exit_code == 0
    before = staged(two_nodes)
    result = run("firmware", "cancel", *args)
    assert result.exit_code == code and message in result.output, result.output
    assert "Traceback" not in result.output
    assert staged(two_nodes) == before


def test_firmware_cancel_all_without_nodes_says_so(run, journal):
    result = run("firmware", "cancel", "--all")
    assert result.exit_code == 1 and "no nodes yet" in result.output


def test_node_config_push_sleep_sets_the_interval_the_board_is_told(run, two_nodes):
    """New firmware sleeps by the answer's "sleep" (the node's interval): --sleep with --push sets it,
    and patches netconf.sleep for the wakes that get no answer."""
    result = run("node", "config", "a", "--push", "--sleep", "900")
    assert result.exit_code == 0, result.output
    assert "a's interval is now 900 s" in result.stdout
    assert pushed_patch(two_nodes) == {"netconf": {"sleep": 900}}
    with open_journal(two_nodes) as journal:
        assert {n.name: n.interval_s for n in journal.list_nodes()} == {"a": 900, "b": 300}
        assert journal.node_auth("a").interval_s == 900


def test_firmware_status_says_updated_when_a_board_runs_the_version_it_once_rolled_back_from(run, two_nodes, folder):
    """A board that rolled back from V, then was flashed with V by cable (`tswarm flash` writes the same
    version), reports running V: before, `firmware status` said "rolled back from V" for ever."""
    run("firmware", "push", str(folder), "--node", "a")
    version = staged(two_nodes)["a"]
    with open_journal(two_nodes) as journal:
        journal.report_firmware("a", "v0", None, T)
        journal.report_firmware("a", version, None, T + 10**9)  # its trial's first wake
        journal.report_firmware("a", "v0", version, T + 2 * 10**9)  # then three wakes without a 202
    assert run("firmware", "status").stdout.splitlines()[1].split()[3:6] == ["rolled", "back", "from"]
    with open_journal(two_nodes) as journal:
        journal.report_firmware("a", version, None, T + 3 * 10**9)  # reflashed with it
    assert run("firmware", "status").stdout.splitlines()[1].split() == [
        "a", version, version, "updated", "2025-11-24T16:00:03.000000000Z",
    ]
    doc = json.loads(run("firmware", "status", "--json").stdout)[0]
    assert (doc["outcome"], doc["outcome_at"]) == ("updated", "2025-11-24T16:00:03.000000000Z")


@pytest.mark.parametrize("files, says", [
    ({"node.py": b""}, "node.py is empty"),
    ({"node.py": b"x = '\xe9'\n"}, "node.py is not UTF-8 text"),
    ({"node.py": b"x = 1\n", "Node.py": b"x = 2\n"}, "differ only in case"),
], ids=["empty-node-py", "node-py-not-utf8", "names-differ-in-case"])
def test_firmware_push_refuses_a_folder_whose_code_a_board_cannot_run(run, two_nodes, tmp_path, files, says):
    d = tmp_path / "bad"
    d.mkdir()
    for name, content in files.items():
        (d / name).write_bytes(content)
    result = run("firmware", "push", str(d), "--all")
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and says in result.stderr, result.output
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert staged(two_nodes) == {"a": None, "b": None}


def test_firmware_push_all_when_every_node_goes_meanwhile_is_an_error(run, two_nodes, folder, monkeypatch):
    """The nodes are listed, then another process removes them before the stage (which cannot be
    made to happen on cue: the bundle's keeping, between the two, does it here). Before: "staged for
    0 node(s): " and success."""
    with open_journal(two_nodes) as journal:
        kind = type(journal)
    keep = kind.add_bundle

    def add_bundle_while_nodes_go(self, *args):
        with open_journal(two_nodes) as other:
            for name in ("a", "b"):
                other.remove_node(name)
        return keep(self, *args)

    monkeypatch.setattr(kind, "add_bundle", add_bundle_while_nodes_go)
    result = run("firmware", "push", str(folder), "--all")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no node is registered"), result.output
