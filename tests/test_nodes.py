"""The registry's rules, once (service/nodes.py): registering a node, whether it is halted, and the
node summary that GET /api/nodes and `tswarm node list --json` both print."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import tswarm
from tswarm import auth, keys
from tswarm.flash import register as flash_register
from tswarm.storage import NodeExists, NodeNotFound, ReadingExtra
from tswarm.nodes import BadPassword, Registration, battery_low, is_halted, nodes_report, register

from .conftest import TEST_SCRYPT_N, test_config

pytestmark = pytest.mark.engines


@pytest.fixture
def config(tmp_path):
    return test_config(tmp_path)


def stored_hash(journal, name):
    return journal.node_auth(name).password_hash


def test_register_hashes_with_the_configured_scrypt_cost(journal, config):
    registered = register(journal, config, "a", "pw-a")
    assert (registered.name, registered.password, registered.added) == ("a", "pw-a", True)
    assert stored_hash(journal, "a").startswith(f"scrypt${TEST_SCRYPT_N}$8$1$")
    assert auth.verify_password("pw-a", stored_hash(journal, "a"))


def test_register_generates_a_strong_password_when_none_is_given(journal, config):
    password = register(journal, config, "a").password
    assert len(password) >= 24 and auth.verify_password(password, stored_hash(journal, "a"))


def scrypt_n(password_hash: str) -> int:
    """The n a stored hash was made with (``scrypt$n$r$p$salt$key``)."""
    scheme, n, r, p, _salt, _key = password_hash.split("$")
    assert (scheme, r, p) == ("scrypt", "8", "1")
    return int(n)


@pytest.mark.parametrize("which", list(Registration))
def test_a_generated_password_gets_the_cheap_hash_and_a_chosen_one_the_memory_hard_one(journal, config, which):
    if which is Registration.EXISTING:
        register(journal, config, "a", "first")
    generated = register(journal, config, "a", None, which)
    assert scrypt_n(stored_hash(journal, "a")) == auth.SCRYPT_N_GENERATED
    assert auth.verify_password(generated.password, stored_hash(journal, "a"))
    register(journal, config, "a", "chosen-by-a-person", Registration.EXISTING)
    assert scrypt_n(stored_hash(journal, "a")) == TEST_SCRYPT_N  # config.scrypt_n: SCRYPT_N when shipped
    assert auth.verify_password("chosen-by-a-person", stored_hash(journal, "a"))
    # a password the caller generated first (the CLI, tswarm flash) says so
    password = auth.generate_password()
    register(journal, config, "a", password, Registration.EXISTING, generated=True)
    assert scrypt_n(stored_hash(journal, "a")) == auth.SCRYPT_N_GENERATED
    assert auth.verify_password(password, stored_hash(journal, "a"))


def test_a_chosen_password_keeps_scrypt_n_2_13_as_shipped(journal, tmp_path):
    shipped = test_config(tmp_path).with_(scrypt_n=auth.SCRYPT_N)
    register(journal, shipped, "a", "chosen-by-a-person")
    assert scrypt_n(stored_hash(journal, "a")) == 2**13
    assert auth.verify_password("chosen-by-a-person", stored_hash(journal, "a"))


def test_a_new_node_must_be_new_and_a_new_password_needs_the_node(journal, config):
    register(journal, config, "a", "one")
    with pytest.raises(NodeExists):
        register(journal, config, "a", "two")
    assert auth.verify_password("one", stored_hash(journal, "a"))
    with pytest.raises(NodeNotFound):
        register(journal, config, "ghost", "pw", Registration.EXISTING)
    assert journal.node_auth("ghost") is None
    again = register(journal, config, "a", "two", Registration.EXISTING)
    assert not again.added and auth.verify_password("two", stored_hash(journal, "a"))


def test_either_adds_a_new_node_or_gives_an_existing_one_the_password(journal, config):
    assert register(journal, config, "a", "one", Registration.EITHER).added
    assert not register(journal, config, "a", "two", Registration.EITHER).added
    assert auth.verify_password("two", stored_hash(journal, "a"))
    journal.remove_node("a")
    assert register(journal, config, "a", "three", Registration.EITHER).added  # a removed name is new again


@pytest.mark.parametrize("which", list(Registration))
def test_an_empty_password_or_a_bad_name_changes_nothing(journal, config, which):
    with pytest.raises(BadPassword, match="must not be empty"):
        register(journal, config, "a", "", which)
    with pytest.raises(ValueError, match="node names are"):
        register(journal, config, "../a", "pw", which)
    assert journal.list_nodes() == []


def test_flash_registers_through_the_same_function(journal, config):
    assert flash_register(config, "a", "pw-a", given=True) is None
    assert stored_hash(journal, "a").startswith(f"scrypt${TEST_SCRYPT_N}$")  # config.scrypt_n, as admin and CLI
    note = flash_register(config, "a", "pw-b", given=False)
    assert "new one" in note and auth.verify_password("pw-b", stored_hash(journal, "a"))
    assert scrypt_n(stored_hash(journal, "a")) == auth.SCRYPT_N_GENERATED  # given=False: flash generated it


def test_passwords_are_hashed_in_one_place():
    service = Path(tswarm.__file__).parent
    callers = sorted(p.name for p in service.rglob("*.py") if "hash_password(" in p.read_text())
    assert callers == ["auth.py", "nodes.py"]  # the definition, and register


@pytest.mark.parametrize("node_halted, halted_all, env_halt, expected", [
    (False, False, False, False), (True, False, False, True), (False, True, False, True), (False, False, True, True),
])
def test_a_node_is_halted_by_itself_by_halt_all_or_by_TSWARM_HALT(config, node_halted, halted_all, env_halt, expected):
    class Node:
        halted = node_halted

    assert is_halted(Node(), config.with_(halt=env_halt), halted_all) is expected
    assert is_halted(None, config.with_(halt=env_halt), halted_all) is (halted_all or env_halt)


def test_the_report_counts_TSWARM_HALT_like_tswarm_halt(journal, config):
    register(journal, config, "a", "pw")
    now = time.time_ns()
    assert nodes_report(journal, config, now)["halted_all"] is False
    report = nodes_report(journal, config.with_(halt=True), now)
    assert report["halted_all"] is True and report["nodes"][0]["halted"] is True
    assert report["nodes"][0]["health"] == "halted"


@pytest.mark.parametrize("vbat, threshold, expected", [
    (3.29, 3.3, True), (3.3, 3.3, False), (4.2, 3.3, False), (None, 3.3, None), (11.9, 12.0, True),
])
def test_a_battery_is_low_below_the_threshold_and_unknown_without_a_voltage(vbat, threshold, expected):
    assert battery_low(vbat, threshold) is expected


def test_the_summary_gives_the_newest_readings_telemetry_and_whether_the_battery_is_low(journal, config):
    """Of the newest reading by time: a node whose newest came without telemetry shows null, though
    an older one had it; a kept reading (older time, stored later) does not count as the newest."""
    for name in ("full", "low", "quiet", "never"):
        register(journal, config, name, "pw")
    now = time.time_ns()
    journal.add_readings([
        ("full", now - 600 * 10**9, 20.0, 50.0, ReadingExtra(vbat=3.1, rssi=-90, awake_ms=5000)),
        ("full", now - 300 * 10**9, 21.0, 51.0, ReadingExtra(vbat=3.92, rssi=-58, awake_ms=812, lost=2)),
        ("low", now - 300 * 10**9, 19.0, 60.0, ReadingExtra(vbat=3.25)),
        ("quiet", now - 600 * 10**9, 18.0, 55.0, ReadingExtra(vbat=2.9, rssi=-70)),
        ("quiet", now - 300 * 10**9, 18.5, 56.0),
        ("full", now - 900 * 10**9, 20.5, 49.0, ReadingExtra(vbat=2.5, rssi=-99, awake_ms=1)),  # kept, older
    ])
    nodes = {n["name"]: n for n in nodes_report(journal, config, now)["nodes"]}
    telemetry = {name: [n[k] for k in ("vbat", "rssi", "awake_ms", "battery_low")] for name, n in nodes.items()}
    assert telemetry == {
        "full": [3.92, -58, 812, False],
        "low": [3.25, None, None, True],
        "quiet": [None, None, None, None],
        "never": [None, None, None, None],
    }
    assert nodes["full"]["temperature"] == 21.0
    # TSWARM_BATTERY_LOW_V decides.
    assert nodes_report(journal, config.with_(battery_low_v=4.0), now)["nodes"][0]["battery_low"] is True
    keys_in_order = list(nodes["full"])
    assert keys_in_order[keys_in_order.index("humidity") + 1:][:4] == ["vbat", "rssi", "awake_ms", "battery_low"]


async def test_node_list_json_prints_what_api_nodes_shows(make_client, journal, data_dir, run):
    register(journal, test_config(data_dir.parent), "a", "pw-a")
    register(journal, test_config(data_dir.parent), "b", "pw-b")
    journal.set_halt("b", True)
    client = await make_client()
    resp = await client.post("/api/nodes/a", data=json.dumps({"name": "a", "data": "21.5 40"}),
                             headers={"Authorization": " Basic " + auth.xauth("a", "pw-a")})
    assert resp.status == 202
    api = (await (await client.get("/api/nodes")).json())["nodes"]
    result = run("node", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    without_age = lambda nodes: [{k: v for k, v in n.items() if k != "age_s"} for n in nodes]  # noqa: E731
    assert without_age(listed) == without_age(api)
    assert [list(n) for n in listed] == [list(n) for n in api]  # same keys in the same order
    assert [n["name"] for n in listed] == ["a", "b"] and [n["halted"] for n in listed] == [False, True]
    assert listed[0]["readings_24h"] == 1 and listed[0]["health"] == "ok" and listed[0]["temperature"] == 21.5


async def test_a_password_changed_by_the_cli_never_lets_the_old_one_in(make_client, journal, data_dir, run):
    """The server's credential cache still remembers the old header (another process cannot clear
    it), but it remembers the hash it verified against: the new hash does not let the old password in.

    On PostgreSQL the node's record comes from the process's registry cache, which another process's
    change clears by a notification that reaches this process's socket just after the change commits
    (service/storage/postgres/cache.py says so): the test waits for that notification, not a time,
    before the next request. The CLI runs in this process here; from another process the CLI's own
    exit alone takes far longer than the notification."""
    register(journal, test_config(data_dir.parent), "a", "old-pw")
    client = await make_client()
    cache = client.app[keys.CREDENTIALS]

    async def post(password):
        resp = await client.post("/api/nodes/a", data=json.dumps({"name": "a", "data": "21.5 40"}),
                                 headers={"Authorization": " Basic " + auth.xauth("a", password)})
        return resp.status

    assert await post("old-pw") == 202
    assert await post("old-pw") == 202 and cache.hits == 1  # the second one from the cache
    journal.node_auth("a")  # PostgreSQL: the process's registry cache, shared with the server's storage
    registry = getattr(journal, "_registry_cache", None)
    generation = registry._generation if registry is not None else None
    result = run("node", "passwd", "a", "--password", "new-pw")
    assert result.exit_code == 0, result.output
    if registry is not None:
        deadline = time.monotonic() + 10
        while registry._generation == generation and time.monotonic() < deadline:
            time.sleep(0.005)
        assert registry._generation != generation, "the registry change's notification never arrived"
    assert len(cache._entries) == 1  # the old header is still remembered here...
    assert await post("old-pw") == 401  # ...and yet no longer passes
    assert await post("new-pw") == 202
