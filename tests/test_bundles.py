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
    (name, content), = config_patch({"netconf": {"sleep": 600, "ssid": ["a"]}})
    assert name == bundles.CONFIG_PATCH and content == b'{"netconf":{"sleep":600,"ssid":["a"]}}'
    assert json.loads(content) == {"netconf": {"sleep": 600, "ssid": ["a"]}}
    assert version_of(config_patch({"netconf": {"ssid": ["a"], "sleep": 600}})) == version_of([(name, content)])


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
