"""service/bundles.py: a bundle's version, its checks, config patches, what a node is offered and
the outcome an operator sees. Pure functions: no storage, no server."""
import hashlib
import json

import pytest
from hypothesis import given, strategies as st

from tswarm import bundles
from tswarm.bundles import BundleError, check_files, config_patch, merge_config, offered, outcome, outcome_text, version_of
from tswarm.storage import BundleFile, FirmwareState, NodeAuth

names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}\.py", fullmatch=True)
files = st.dictionaries(names, st.binary(max_size=64), min_size=1, max_size=6).map(lambda d: sorted(d.items()))


@given(files, st.randoms())
def test_version_of_does_not_depend_on_the_order_of_the_files(bundle, random):
    shuffled = list(bundle)
    random.shuffle(shuffled)
    assert version_of(shuffled) == version_of(bundle)


@given(files, st.data())
def test_version_of_changes_with_any_byte_of_any_file(bundle, data):
    index = data.draw(st.integers(0, len(bundle) - 1))
    name, content = bundle[index]
    if content:
        at = data.draw(st.integers(0, len(content) - 1))
        changed = content[:at] + bytes([content[at] ^ data.draw(st.integers(1, 255))]) + content[at + 1:]
    else:
        changed = b"\0"
    other = bundle[:index] + [(name, changed)] + bundle[index + 1:]
    assert version_of(other) != version_of(bundle)


@given(files, st.data())
def test_version_of_changes_with_a_name(bundle, data):
    index = data.draw(st.integers(0, len(bundle) - 1))
    taken = {n for n, _ in bundle}
    new = data.draw(names.filter(lambda n: n not in taken))
    other = bundle[:index] + [(new, bundle[index][1])] + bundle[index + 1:]
    assert version_of(other) != version_of(bundle)


@given(files)
def test_a_version_is_16_hex_digits_and_a_valid_reported_version(bundle):
    version = version_of(bundle)
    assert len(version) == 16 and int(version, 16) >= 0
    assert bundles.VERSION.match(version)


def test_version_of_is_the_documented_hash():
    node = b"print('hi')\n"
    lines = f"node.py\0{hashlib.sha256(node).hexdigest()}\n"
    assert version_of([("node.py", node)]) == hashlib.sha256(lines.encode()).hexdigest()[:16]


def test_manifest_lists_files_by_name_with_size_and_sha256():
    assert bundles.manifest([("b.py", b"bb"), ("a.py", b"a")]) == [
        BundleFile("a.py", 1, hashlib.sha256(b"a").hexdigest()), BundleFile("b.py", 2, hashlib.sha256(b"bb").hexdigest()),
    ]


# -- merge_config: what the board does with config-patch.json -------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=10)
json_objects = st.dictionaries(st.text(max_size=4), json_values, max_size=4)


def test_merge_config_merges_objects_and_replaces_everything_else():
    config = {"netconf": {"ssid": ["home"], "password": ["old"], "sleep": 300}, "modules": {"pins": {"dht": 5}},
              "svconf": {"login": "n1", "xauth": "x"}}
    patch = {"netconf": {"ssid": ["new"], "password": ["pw"]}, "modules": {"pins": {"dht": 4}, "sensor": "dht11"}}
    assert merge_config(config, patch) == {
        "netconf": {"ssid": ["new"], "password": ["pw"], "sleep": 300},
        "modules": {"pins": {"dht": 4}, "sensor": "dht11"}, "svconf": {"login": "n1", "xauth": "x"},
    }
    assert config["netconf"]["ssid"] == ["home"]  # the config given is not changed


@given(json_objects, json_objects)
def test_merge_config_keeps_every_key_and_takes_every_leaf_of_the_patch(config, patch):
    merged = merge_config(config, patch)
    assert set(merged) == set(config) | set(patch)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            assert merged[key] == merge_config(config[key], value)
        else:
            assert merged[key] == value
    for key in set(config) - set(patch):
        assert merged[key] == config[key]


@given(json_objects, json_objects)
def test_merging_a_patch_twice_is_merging_it_once(config, patch):
    once = merge_config(config, patch)
    assert merge_config(once, patch) == once


@given(json_values, json_objects)
def test_merge_config_into_a_config_that_is_not_an_object_gives_the_patch(config, patch):
    if not isinstance(config, dict):
        assert merge_config(config, patch) == patch


# -- check_files: what cannot be a bundle --------------------------------------------------------

REFUSED = {
    "empty": ([], "at least one file"),
    "folder": ([("lib/x.py", b"")], "no folders"),
    "dot-dot": ([("..", b"")], "no folders"),
    "hidden": ([(".x.py", b"")], "no folders"),
    "too-long": ([("x" * 41 + ".py", b"")], "at most 40"),
    "loader": ([("main.py", b"")], "boot loader"),
    "boot": ([("boot.py", b"")], "boot loader"),
    "not-py": ([("config.json", b"{}")], ".py files"),
    "twice": ([("a.py", b"1"), ("a.py", b"2")], "twice"),
    "big-file": ([("a.py", b"x" * (bundles.MAX_FILE_BYTES + 1))], "per file"),
    "big-bundle": ([(f"f{i}.py", b"x" * bundles.MAX_FILE_BYTES) for i in range(5)], "at most 262144"),
    "many": ([(f"f{i}.py", b"") for i in range(bundles.MAX_FILES + 1)], "at most 16 files"),
    "patch-not-json": ([(bundles.CONFIG_PATCH, b"{")], "not JSON"),
    "patch-not-object": ([(bundles.CONFIG_PATCH, b"[1]")], "JSON object"),
    "patch-empty": ([(bundles.CONFIG_PATCH, b"{}")], "empty"),
    "patch-login": ([(bundles.CONFIG_PATCH, b'{"svconf": {"login": "x"}}')], "credential"),
    "patch-xauth": ([(bundles.CONFIG_PATCH, b'{"svconf": {"xauth": "x"}}')], "credential"),
}


@pytest.mark.parametrize("given_files, says", REFUSED.values(), ids=REFUSED.keys())
def test_check_files_refuses_what_a_board_cannot_take_in_one_line(given_files, says):
    with pytest.raises(BundleError, match=None) as refused:
        check_files(given_files)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_check_files_gives_the_files_by_name():
    assert check_files([("b.py", b"2"), ("a.py", b"1"), (bundles.CONFIG_PATCH, b'{"netconf": {"sleep": 60}}')]) == [
        ("a.py", b"1"), ("b.py", b"2"), (bundles.CONFIG_PATCH, b'{"netconf": {"sleep": 60}}'),
    ]


def test_config_patch_is_one_canonical_json_file():
    (name, content), = config_patch({"netconf": {"sleep": 600, "ssid": ["a"], "password": ["p"]}})
    assert name == bundles.CONFIG_PATCH and content == b'{"netconf":{"password":["p"],"sleep":600,"ssid":["a"]}}'
    assert json.loads(content) == {"netconf": {"sleep": 600, "ssid": ["a"], "password": ["p"]}}
    assert version_of(config_patch({"netconf": {"ssid": ["a"], "password": ["p"], "sleep": 600}})) == version_of([(name, content)])


def test_read_dir_takes_the_py_files_but_the_loader(tmp_path):
    (tmp_path / "node.py").write_bytes(b"n")
    (tmp_path / "main.py").write_bytes(b"m")
    (tmp_path / "notes.txt").write_bytes(b"t")
    assert bundles.read_dir(tmp_path) == [("node.py", b"n")]
    with pytest.raises(BundleError, match="not a folder"):
        bundles.read_dir(tmp_path / "node.py")
    (tmp_path / "node.py").unlink()
    with pytest.raises(BundleError, match="no .py file"):
        bundles.read_dir(tmp_path)


def test_shipped_is_the_firmware_without_its_loader():
    shipped = dict(bundles.shipped())
    assert "node.py" in shipped and not set(shipped) & set(bundles.LOADER_FILES)


# -- what a node is offered, what an operator sees ------------------------------------------------


def auth(**fw) -> NodeAuth:
    return NodeAuth(1, "n1", "h", True, False, **fw)


OFFERS = {
    "old-firmware-sends-nothing": (dict(fw_staged="v2"), None, None, None),
    "nothing-staged": (dict(), "v1", None, None),
    "staged": (dict(fw_staged="v2"), "v1", None, "v2"),
    "same-version": (dict(fw_staged="v2"), "v2", None, None),
    "rolled-back-now": (dict(fw_staged="v2"), "v1", "v2", None),
    "rolled-back-before": (dict(fw_staged="v2", fw_rolled_back="v2"), "v1", None, None),
    "rolled-back-from-another": (dict(fw_staged="v3", fw_rolled_back="v2"), "v1", None, "v3"),
    "unknown-version": (dict(fw_staged="v2"), "unknown", None, "v2"),
}


@pytest.mark.parametrize("fw, reported, rolled_back, expected", OFFERS.values(), ids=OFFERS.keys())
def test_offered(fw, reported, rolled_back, expected):
    assert offered(auth(**fw), reported, rolled_back) == expected


T = 1_764_000_000 * 10**9
OUTCOMES = {
    "nothing": (FirmwareState(running="v1"), ("current", None), "current"),
    "pending": (FirmwareState(running="v1", staged="v2", staged_at=T), ("pending", None), "pending"),
    "updated": (FirmwareState(running="v2", staged="v2", updated_at=T), ("updated", T), "updated 2025-11-24T16:00:00.000000000Z"),
    "ran-it-already": (FirmwareState(running="v2", staged="v2"), ("current", None), "current"),
    "rolled-back": (FirmwareState(running="v1", staged="v2", rolled_back="v2", rolled_back_at=T), ("rolled_back", T),
                    "rolled back from v2 2025-11-24T16:00:00.000000000Z"),
}


@pytest.mark.parametrize("state, code, text", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_outcome_and_its_text(state, code, text):
    assert outcome(state) == code
    assert outcome_text(state) == text
    doc = bundles.firmware_json(state)
    assert (doc["outcome"], doc["summary"], doc["running"], doc["staged"]) == (code[0], text, state.running, state.staged)


# -- what could brick a board, and what a config push may set (the CLI's checks, at the root) ---------

BRICKS = {
    "empty-node-py": ([("node.py", b"")], "node.py is empty"),
    "blank-node-py": ([("node.py", b" \n\t\n")], "node.py is empty"),
    "node-py-not-utf8": ([("node.py", b"print('caf\xe9')\n")], "node.py is not UTF-8 text (byte 10)"),
    "module-not-utf8": ([("node.py", b"pass\n"), ("ota.py", b"\xff\xfe")], "ota.py is not UTF-8 text"),
    "names-differ-in-case": ([("Node.py", b"a = 1\n"), ("node.py", b"a = 2\n")], "differ only in case"),
    "loader-in-other-case": ([("Main.py", b"pass\n")], "main.py is the boot loader"),
}


@pytest.mark.parametrize("given_files, says", BRICKS.values(), ids=BRICKS.keys())
def test_check_files_refuses_code_a_board_cannot_run_or_hold(given_files, says):
    """Before: staged and offered; the board fetched it and had no node.py to run (or one file for
    two names on its FAT file system)."""
    with pytest.raises(BundleError) as refused:
        check_files(given_files)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_check_files_takes_utf8_code_and_an_empty_module_beside_node_py():
    files = [("node.py", "print('café ☕')\n".encode()), ("extra.py", b"")]
    assert check_files(files) == sorted(files)


PATCHES_REFUSED = {  # what `tswarm node config --push` refuses (tests/test_cli_firmware.py), as a patch
    "empty-ssid": ({"netconf": {"ssid": [""], "password": ["x"]}}, "netconf.ssid must be 1 to 32 bytes (a network name), got 0"),
    "long-ssid": ({"netconf": {"ssid": ["s" * 33], "password": ["x"]}}, "netconf.ssid must be 1 to 32 bytes"),
    "long-ssid-one-string": ({"netconf": {"ssid": "s" * 33, "password": "x"}}, "netconf.ssid must be 1 to 32 bytes"),
    "ssid-not-utf8": ({"netconf": {"ssid": ["home\udcff"], "password": ["x"]}}, "netconf.ssid 'home\\udcff' is not UTF-8 text"),
    "long-wifi-password": ({"netconf": {"ssid": ["home"], "password": ["p" * 65]}}, "netconf.password must be 0 to 64 bytes"),
    "wifi-password-not-utf8": ({"netconf": {"ssid": ["home"], "password": ["pw\udcff"]}}, "netconf.password is not UTF-8 text"),
    "ssid-alone": ({"netconf": {"ssid": ["home"]}}, "netconf.ssid without netconf.password"),
    "password-alone": ({"netconf": {"password": ["x"]}}, "netconf.password without netconf.ssid"),
    "counts-differ": ({"netconf": {"ssid": ["a", "b"], "password": ["x"]}}, "2 netconf.ssid but 1 netconf.password"),
    "no-network": ({"netconf": {"ssid": [], "password": []}}, "at least one"),
    "ssid-not-a-string": ({"netconf": {"ssid": [7], "password": ["x"]}}, "netconf.ssid must be a list of network names"),
    "bad-ip": ({"netconf": {"ip": "300.1.1.1"}}, "netconf.ip '300.1.1.1' is not an IPv4 address"),
    "ip-a-number": ({"netconf": {"ip": 5}}, "netconf.ip must be an IPv4 address as a string"),
    "bad-gateway": ({"netconf": {"gateway": "192.168.1"}}, "netconf.gateway '192.168.1' is not an IPv4 address"),
    "bad-dns": ({"netconf": {"dns": "dns.example"}}, "netconf.dns 'dns.example' is not an IPv4 address"),
    "non-contiguous-netmask": ({"netconf": {"netmask": "255.0.255.0"}}, "netconf.netmask '255.0.255.0' is not a netmask"),
    "host-mask": ({"netconf": {"mask": "0.0.0.255"}}, "netconf.mask '0.0.0.255' is not a netmask"),
    "short-sleep": ({"netconf": {"sleep": 5}}, "netconf.sleep must be a whole number of seconds, 10 to 604800"),
    "sleep-true": ({"netconf": {"sleep": True}}, "netconf.sleep must be a whole number"),
    "sleep-a-string": ({"netconf": {"sleep": "900"}}, "netconf.sleep must be a whole number"),
    "netconf-not-object": ({"netconf": ["home"]}, "netconf must be an object"),
    "svconf-not-object": ({"svconf": None}, "and the node's credentials with it"),
    "lone-surrogate-elsewhere": ({"modules": {"sensor": "dht\ud800"}}, "modules.sensor is not UTF-8 text"),
}


@pytest.mark.parametrize("patch, says", PATCHES_REFUSED.values(), ids=PATCHES_REFUSED.keys())
def test_check_patch_refuses_what_the_cli_refuses_to_push(patch, says):
    """The admin API and a bundle's config-patch.json are checked here, as the CLI's options are
    (service/flash.py's check_wifi and address_problem): before, such a patch was staged and the
    board, unable to join its network, rolled back three wakes later."""
    with pytest.raises(BundleError) as refused:
        config_patch(patch)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    assert "pw\udcff" not in str(refused.value) and "'pw" not in str(refused.value)  # a Wi-Fi password is never quoted
    content = json.dumps(patch, ensure_ascii=True).encode()
    with pytest.raises(BundleError):  # the same file in a bundle
        check_files([(bundles.CONFIG_PATCH, content)])


@pytest.mark.parametrize("patch", [
    {"netconf": {"ssid": ["home", "cafe"], "password": ["pw", ""]}},
    {"netconf": {"ssid": "home", "password": "one for all"}},  # the seed's config.json
    {"netconf": {"ssid": ["s" * 32], "password": ["p" * 64]}},
    {"netconf": {"ip": None, "gateway": None}},  # back to DHCP
    {"netconf": {"ip": "192.168.1.50", "gateway": "192.168.1.1", "netmask": "255.255.0.0", "dns": "1.1.1.1"}},
    {"netconf": {"sleep": 10}}, {"netconf": {"sleep": 604800}},
    {"svconf": {"url": "http://192.168.1.20:8080/api/nodes/n1"}},
], ids=["two-networks", "seed-strings", "longest", "dhcp", "static", "sleep-min", "sleep-max", "url"])
def test_check_patch_takes_what_a_board_can_use(patch):
    assert json.loads(config_patch(patch)[0][1]) == patch


@given(st.dictionaries(st.sampled_from(["modules", "netconf"]), st.dictionaries(
    st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), max_size=4).filter(
        lambda k: k not in ("ssid", "password", "sleep", "ip", "netmask", "gateway", "dns", "mask")),
    st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), max_size=6), min_size=1, max_size=3), min_size=1))
def test_a_patch_without_characters_beyond_u_ffff_is_the_same_file_as_before(patch):
    """Every patch that worked keeps its bytes, so its version (what nodes in the field run) stays."""
    (_, content), = config_patch(patch)
    assert content == json.dumps(patch, sort_keys=True, separators=(",", ":")).encode()


def test_a_character_beyond_u_ffff_reaches_the_board_as_itself():
    """Python's json writes a "\\ud83c\\udfe0" (a surrogate pair) that MicroPython's json reads as the
    halves' bytes: the board got another SSID than the operator's, could not join, and rolled back.
    The patch carries such characters as UTF-8, which the real MicroPython reads as they are."""
    import subprocess

    from .firmware.board import micropython_binary

    ssid = "\U0001f3e0 home"
    (_, content), = config_patch({"netconf": {"ssid": [ssid], "password": ["pw"]}})
    assert ssid.encode() in content and b"\\ud83c" not in content
    script = ("import json\ns = json.loads(%r.decode())['netconf']['ssid'][0]\nprint(s.encode() == %r)"
              % (content, ssid.encode()))
    out = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "True", out


def test_outcome_of_a_board_running_the_staged_version_again_after_a_rollback_is_updated():
    """Before: "rolled back from V" for ever, while the board (reflashed with V) said it ran V."""
    state = FirmwareState(running="v2", reported_at=T + 30, staged="v2", updated_at=T + 10, rolled_back="v2",
                          rolled_back_at=T + 20)
    assert outcome(state) == ("updated", T + 30)
    assert outcome_text(FirmwareState(running="v2", staged="v2", updated_at=T + 30, rolled_back="v2",
                                      rolled_back_at=T + 20)) == f"updated {bundles.rfc3339(T + 30)}"
    assert outcome(FirmwareState(running="v1", staged="v2", rolled_back="v2", rolled_back_at=T))[0] == "rolled_back"
