"""The swarm's summary for a master node's screen, ``GET /api/nodes/{name}/swarm`` (service/swarm.py),
and the display right it needs (``tswarm node add --display``, ``tswarm node display``), through
create_app and aiohttp's test client on every engine, the CLI as a user runs it (a child process)."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from tswarm import auth, keys
from tswarm.storage import NodeNotFound, ReadingExtra

from .conftest import NS, register
from .servers import run_cli
from .test_protocol import PW, assert_error

pytestmark = pytest.mark.engines

S = NS  # one second in ns


def basic(login="master", password=PW):
    return {"Authorization": " Basic " + auth.xauth(login, password)}


async def swarm(client, name="master", query="", **headers):
    return await client.get(f"/api/nodes/{name}/swarm{query}", headers=headers or basic(name))


@pytest.fixture
def master(journal):
    """A master node with the display right and a DHT of its own (a reading 20 s ago), interval 60 s."""
    register(journal, "master", PW, created=True)
    journal.set_display("master", True)
    journal.set_interval("master", 60)
    journal.add_readings([("master", time.time_ns() - 20 * S, 20.0, 50.0, ReadingExtra())])
    return journal


@pytest.fixture
def swarm_nodes(master):
    """Beside the master: kitchen ok (10 s ago, 3.31 V), porch late (1000 s), attic silent (4000 s, 3.1 V:
    low), shed halted (5 s ago), cellar never; and gone, removed. Returns the time the readings were
    written against."""
    journal = master
    now = time.time_ns()
    for name in ("attic", "cellar", "gone", "kitchen", "porch", "shed"):
        register(journal, name, PW, created=True)
    journal.add_readings([
        ("attic", now - 4000 * S, 5.0, 70.5, ReadingExtra(vbat=3.1)),
        ("porch", now - 1000 * S, -3.2, 80.0, ReadingExtra()),
        ("gone", now - 500 * S, 1.0, 2.0, ReadingExtra()),
        ("shed", now - 5 * S, 12.25, 55.0, ReadingExtra(rssi=-70)),
        ("kitchen", now - 10 * S, 21.5, 40.0, ReadingExtra(vbat=3.31, rssi=-61, awake_ms=900)),
    ])
    journal.set_halt("shed", True)
    journal.remove_node("gone")
    return now


def _ages(doc) -> dict:
    return {n["name"]: n["age"] for n in doc["nodes"]}


async def test_the_summary_holds_every_registered_node_by_name_with_the_values_the_service_holds(client, swarm_nodes):
    resp = await swarm(client)
    assert resp.status == 200 and resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    raw = await resp.read()
    after = time.time_ns()
    doc = json.loads(raw)
    assert raw == json.dumps(doc, separators=(",", ":")).encode()  # compact, keys in this order
    assert list(doc) == ["total", "offset", "sleep", "counts", "nodes"]
    ages = _ages(doc)
    for name, seconds in (("attic", 4000), ("kitchen", 10), ("master", 20), ("porch", 1000), ("shed", 5)):
        # whole seconds (floor) since the reading: at least its age when written, at most that plus the wait
        assert seconds <= ages[name] <= seconds + (after - swarm_nodes) // S, (name, ages[name])
    assert doc == {
        "total": 6, "offset": 0, "sleep": 60,
        "counts": {"ok": 2, "late": 1, "silent": 1, "halted": 1, "never": 1, "low_battery": 1},
        "nodes": [
            {"name": "attic", "health": "silent", "age": ages["attic"], "temperature": 5.0, "humidity": 70.5,
             "vbat": 3.1, "low": True},
            {"name": "cellar", "health": "never", "age": None, "temperature": None, "humidity": None,
             "vbat": None, "low": None},
            {"name": "kitchen", "health": "ok", "age": ages["kitchen"], "temperature": 21.5, "humidity": 40.0,
             "vbat": 3.31, "low": False},
            {"name": "master", "health": "ok", "age": ages["master"], "temperature": 20.0, "humidity": 50.0,
             "vbat": None, "low": None},
            {"name": "porch", "health": "late", "age": ages["porch"], "temperature": -3.2, "humidity": 80.0,
             "vbat": None, "low": None},
            {"name": "shed", "health": "halted", "age": ages["shed"], "temperature": 12.25, "humidity": 55.0,
             "vbat": None, "low": None},
        ],
    }
    assert all(type(age) is int for age in ages.values() if age is not None)


async def test_a_master_that_never_sent_a_reading_is_not_on_its_own_screen(client, journal):
    """A master without a sensor of its own never sends a reading: listed, it would be a ``never`` on its
    own screen and in its count of nodes needing attention for ever. Another master sees it; its own
    first reading puts it on its own screen."""
    for name in ("wall", "desk"):
        register(journal, name, PW, created=True)
        journal.set_display(name, True)
    register(journal, "kitchen", PW, created=True)
    own = await (await swarm(client, "wall")).json()
    assert (own["total"], own["counts"]["never"], [n["name"] for n in own["nodes"]]) == (2, 2, ["desk", "kitchen"])
    journal.add_readings([("wall", time.time_ns(), 19.0, 45.0, ReadingExtra())])
    own = await (await swarm(client, "wall")).json()
    assert [n["name"] for n in own["nodes"]] == ["desk", "kitchen", "wall"] and own["counts"]["never"] == 2


async def test_no_secret_and_nothing_but_the_screen_lines_is_in_the_summary(client, swarm_nodes, journal):
    raw = await (await swarm(client)).text()
    assert "scrypt$" not in raw and journal.node_auth("kitchen").password_hash not in raw
    assert "gone" not in raw  # removed: not listed
    for key in ("rssi", "awake_ms", "firmware", "password", "registered", "readings_24h"):
        assert key not in raw


async def test_pages_are_slices_of_the_nodes_by_name_and_counts_and_total_stay_over_all_of_them(client, swarm_nodes):
    first = await (await swarm(client, query="?limit=4")).json()
    second = await (await swarm(client, query="?offset=4&limit=4")).json()
    beyond = await (await swarm(client, query="?offset=6")).json()
    assert [n["name"] for n in first["nodes"]] == ["attic", "cellar", "kitchen", "master"]
    assert [n["name"] for n in second["nodes"]] == ["porch", "shed"]
    assert (first["offset"], second["offset"], beyond["offset"], beyond["nodes"]) == (0, 4, 6, [])
    assert first["total"] == second["total"] == beyond["total"] == 6
    assert first["counts"] == second["counts"] == beyond["counts"]
    zeros = await (await swarm(client, query="?offset=00000000000000000004&limit=0000000000000004")).json()
    assert zeros["nodes"] == second["nodes"]  # leading zeros are still the number


async def test_the_default_page_is_20_nodes_and_a_page_holds_at_most_100(client, master):
    for i in range(120):
        master.add_node(f"n{i:03d}", "h")
    default = await (await swarm(client)).json()
    widest = await (await swarm(client, query="?limit=100&offset=10")).json()
    assert default["total"] == widest["total"] == 121 and default["counts"]["never"] == 120  # the master has a reading
    assert len(default["nodes"]) == 20 and len(widest["nodes"]) == 100
    assert widest["nodes"][0]["name"] == "n009"  # master, n000, ... by name


async def test_halt_all_marks_every_node_halted(client, swarm_nodes, journal):
    journal.set_halt(None, True)
    doc = await (await swarm(client)).json()
    assert doc["counts"] == {"ok": 0, "late": 0, "silent": 0, "halted": 6, "never": 0, "low_battery": 1}
    assert {n["health"] for n in doc["nodes"]} == {"halted"}


async def test_tswarm_halt_env_marks_every_node_halted(make_client, swarm_nodes):
    client = await make_client(halt=True)
    doc = await (await swarm(client)).json()
    assert doc["counts"]["halted"] == 6


@pytest.mark.parametrize("query, says", [
    ("?offset=-1", "offset must be a whole number from 0 on"),
    ("?offset=x", "offset must be a whole number from 0 on"),
    ("?offset=1.5", "offset must be"),
    ("?limit=0", "limit must be a whole number from 1 to 100"),
    ("?limit=101", "limit must be a whole number from 1 to 100"),
    ("?limit=", "limit must be"),
    ("?limit=%C2%B2", "limit must be"),  # a superscript two: a digit to str.isdigit, not a number
    ("?limit=5&limit=6", "give limit once"),
    ("?page=2", "unknown parameter 'page'; known: offset, limit"),
    # a whole number of 20 digits: the detail says the bound it passed, not only "a whole number"
    ("?offset=99999999999999999999", "offset must be a whole number from 0 on of at most 12 digits, not '9999"),
    ("?limit=99999999999999999999", "limit must be a whole number from 1 to 100, not '9999"),
])
async def test_a_bad_parameter_gets_400_saying_what_is_allowed(client, master, query, says):
    doc = await assert_error(await swarm(client, query=query), 400, "bad_parameter")
    assert says in doc["detail"]


async def test_a_wrong_password_gets_401_with_the_realm(client, master):
    resp = await swarm(client, **basic(password="wrong"))
    await assert_error(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="tswarm"'
    await assert_error(await client.get("/api/nodes/master/swarm"), 401)  # no credentials


async def test_another_nodes_credentials_get_403_even_with_the_right(client, master, journal):
    register(journal, "kitchen", PW, created=True)
    journal.set_display("kitchen", True)
    doc = await assert_error(await swarm(client, "master", **basic("kitchen")), 403)
    assert doc["detail"] == "these credentials belong to another node; a node sends and reads only as itself"


async def test_a_node_without_the_right_gets_403_saying_how_to_allow_it(client, journal):
    register(journal, "kitchen", PW, created=True)
    doc = await assert_error(await swarm(client, "kitchen"), 403, "no_display_right")
    assert doc == {"error": "no_display_right",
                   "detail": "node kitchen may not read the swarm; 'tswarm node display kitchen on' allows it"}


async def test_an_unknown_or_removed_node_gets_401(client, master, journal):
    await assert_error(await swarm(client, "nobody"), 401)
    journal.remove_node("master")
    await assert_error(await swarm(client), 401)


async def test_a_bad_node_name_gets_400(client):
    await assert_error(await client.get("/api/nodes/bad%20name/swarm", headers=basic("bad name")), 400, "bad_node_name")


async def test_the_right_turned_on_and_off_by_the_cli_is_seen_on_the_next_request(client, journal, data_dir):
    """`tswarm node display` in a child process, as a user runs it beside the service: the service's
    registry snapshot (SQLite) or cache (PostgreSQL) holds the node's record from the request before,
    and the very next request sees the change."""
    register(journal, "kitchen", PW, created=True)
    await assert_error(await swarm(client, "kitchen"), 403, "no_display_right")
    await assert_error(await swarm(client, "kitchen"), 403, "no_display_right")  # the record is kept now
    out = run_cli(data_dir, "node", "display", "kitchen", "on").stdout
    assert out == "node kitchen may read the swarm summary (GET /api/nodes/kitchen/swarm)\n"
    assert (await swarm(client, "kitchen")).status == 200
    assert (await swarm(client, "kitchen")).status == 200
    out = run_cli(data_dir, "node", "display", "kitchen", "off").stdout
    assert out == "node kitchen may no longer read the swarm summary\n"
    await assert_error(await swarm(client, "kitchen"), 403, "no_display_right")


async def test_node_add_display_gives_the_right_and_the_svconf_logs_in(client, data_dir, journal):
    conf = json.loads(run_cli(data_dir, "node", "add", "hall", "--display", "--password", PW).stdout)
    assert conf["login"] == "hall" and journal.node_auth("hall").display is True
    resp = await client.get("/api/nodes/hall/swarm", headers={"Authorization": " Basic " + conf["xauth"]})
    # hall never sent a reading (a master without a sensor): it is not on its own screen
    assert resp.status == 200 and (await resp.json())["total"] == 0
    run_cli(data_dir, "node", "add", "desk", "--password", PW)
    assert journal.node_auth("desk").display is False


def test_node_display_for_an_unknown_node_is_one_error_line(run, journal):
    result = run("node", "display", "nobody", "on")
    assert result.exit_code == 1
    assert result.output == "Error: no node named 'nobody'; 'tswarm node list' shows them\n"
    result = run("node", "display", "nobody", "maybe")
    assert result.exit_code == 2 and "'maybe' is not one of 'on', 'off'" in result.output


def test_set_display_for_an_unknown_or_removed_node_is_node_not_found(journal):
    with pytest.raises(NodeNotFound):
        journal.set_display("nobody", True)
    register(journal, "gone", PW)
    journal.remove_node("gone")
    with pytest.raises(NodeNotFound):
        journal.set_display("gone", True)


def test_a_node_added_again_after_its_removal_starts_without_the_right(journal):
    register(journal, "hall", PW)
    journal.set_display("hall", True)
    assert journal.node_auth("hall").display and journal.list_nodes()[0].display
    journal.remove_node("hall")
    register(journal, "hall", PW)
    assert not journal.node_auth("hall").display and not journal.list_nodes()[0].display


def test_register_sets_the_right_only_when_told(journal, tmp_path):
    from tswarm.nodes import Registration, register as register_node

    from .conftest import test_config

    config = test_config(tmp_path)
    register_node(journal, config, "hall", PW, display=True)
    assert journal.node_auth("hall").display
    register_node(journal, config, "hall", "new-pw", Registration.EXISTING)  # None: left as it is
    assert journal.node_auth("hall").display
    register_node(journal, config, "hall", "other-pw", Registration.EITHER, display=False)
    assert not journal.node_auth("hall").display


async def test_one_storage_read_per_request(client, swarm_nodes, monkeypatch):
    """However many nodes, a summary is one call of the storage (:meth:`Storage.swarm_nodes`), and no
    count of readings. (The login's record is the registry snapshot's, or read as for every node
    request while PostgreSQL's cache is not listening yet: not counted here.)"""
    pool = client.app[keys.STORAGE]
    calls = []
    real = type(pool).read

    async def counted(self, fn, *args, **kwargs):
        calls.append(fn)
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(type(pool), "read", counted)
    await swarm(client)  # the pool opens its snapshot with the first lookup
    calls.clear()
    assert (await swarm(client)).status == 200
    snapshot_read = type(pool._snapshot).read
    assert len([fn for fn in calls if getattr(fn, "__func__", None) is not snapshot_read]) == 1


@pytest.mark.engines("postgres")
async def test_postgres_stopped_gets_503_with_retry_after_and_then_recovers(make_client, postgres_factory):
    """PostgreSQL (a private cluster) stops under a running app: the summary cannot be read, so a 503;
    started again, the same app answers without a restart."""
    from tswarm.storage import open_storage

    server = postgres_factory()
    url = server.new_database()
    with open_storage("", url) as journal:
        register(journal, "master", PW, created=True)
        journal.set_display("master", True)
        register(journal, "kitchen", PW, created=True)
    client = await make_client(database_url=url)
    assert (await swarm(client)).status == 200
    server.stop()
    resp = await swarm(client)
    await assert_error(resp, 503, "journal_unavailable")
    assert int(resp.headers["Retry-After"]) > 0
    server.start()
    for _ in range(100):  # the pool's probe notices the return within a few tenths of a second
        resp = await swarm(client)
        if resp.status == 200:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 200 and (await resp.json())["total"] == 1


# -- the right where nodes are listed: tswarm node list (and --json), GET /api/nodes ----------------


async def test_every_node_listed_says_whether_it_has_the_right(make_client, journal, run):
    register(journal, "kitchen", PW, created=True)
    register(journal, "master", PW, created=True)
    journal.set_display("master", True)
    client = await make_client()
    listed = {n["name"]: n["display"] for n in (await (await client.get("/api/nodes")).json())["nodes"]}
    assert listed == {"kitchen": False, "master": True}
    assert (await (await client.get("/api/nodes/master")).json())["display"] is True
    assert (await (await client.get("/api/nodes/kitchen")).json())["display"] is False
    assert {n["name"]: n["display"] for n in json.loads(run("node", "list", "--json").output)} == listed
    lines = run("node", "list").output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "DISPLAY"]
    assert [line.split()[:3] for line in lines[1:]] == [["kitchen", "active", "-"], ["master", "active", "yes"]]


async def test_node_credentials_with_the_right_still_read_nothing_else(client, master):
    """Today's tenancy rule holds: the right opens the summary, not the reader or admin routes."""
    for path in ("/api/nodes", "/api/nodes/master", "/api/readings", "/api/admin/firmware"):
        resp = await client.get(path, headers=basic())
        assert resp.status in (403, 404), (path, resp.status)  # admin routes are off here: 404
    doc = await assert_error(await client.get("/api/nodes", headers=basic()), 403, "node_credentials")
    # not "can only send readings": a master's credentials read its summary
    assert doc["detail"] == ("node credentials open only the node's own /api/nodes/NAME routes (its readings, its"
                             " updates, a master's /swarm); use a bearer token")
