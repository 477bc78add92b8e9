"""Over-the-air updates in the node protocol: what a board that says its firmware is offered, what it
reports, and the file route it fetches an update from (docs/protocol.md, service/firmware_routes.py),
through create_app and aiohttp's test client on every engine."""
import hashlib

import pytest

from tswarm import bundles
from tswarm.storage import FirmwareState, StorageUnavailable

from .conftest import register
from .test_protocol import PW, assert_error, body, hdr, stored

pytestmark = pytest.mark.engines

NODE_PY = b"print('new node.py')\n" * 40
OTA_PY = b"# ota\n"
FILES = [("node.py", NODE_PY), ("ota.py", OTA_PY)]
V2 = bundles.version_of(FILES)
T = 1_764_000_000 * 10**9


def fw(version="v1", rolled_back=None, **kw):
    """Headers of a board running firmware ``version`` (after a rollback from ``rolled_back``)."""
    headers = {**hdr(**kw), "X-Tswarm-Firmware": version}
    if rolled_back:
        headers["X-Tswarm-Rolled-Back"] = rolled_back
    return headers


def stage(journal, files=FILES, nodes=("n1",)) -> str:
    version = bundles.version_of(files)
    journal.add_bundle(version, bundles.check_files(files), T)
    journal.stage_bundle(version, list(nodes), T)
    return version


def offer(version=V2, files=FILES) -> dict:
    return {"version": version, "files": [
        {"name": n, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()} for n, c in sorted(files)
    ]}


@pytest.fixture
def node(journal):
    register(journal, "n1", PW, created=True)
    return "n1"


async def put(client, headers, name="n1"):
    resp = await client.put(f"/api/nodes/{name}", data=body(name=name), headers=headers)
    return resp, await resp.json()


# -- what old boards see: the keys of today plus "sleep" (and "awake") ----------------------------


async def test_a_board_without_the_header_gets_todays_202_keys_plus_sleep_whatever_is_staged(client, journal, node):
    stage(journal)
    journal.set_interval("n1", 600)
    resp, doc = await put(client, hdr())
    assert resp.status == 202
    assert set(doc) == {"stored", "node", "time", "sleep"}
    assert (doc["stored"], doc["node"], doc["sleep"]) == (True, "n1", 600)
    assert journal.firmware_state("n1").running is None  # nothing reported


async def test_a_halted_board_without_the_header_gets_todays_423_keys_plus_sleep_and_awake(make_client, journal, node):
    stage(journal)
    journal.set_halt("n1", True)
    client = await make_client(halt_awake=900)
    resp, doc = await put(client, hdr())
    assert resp.status == 423
    assert set(doc) == {"error", "detail", "stored", "time", "sleep", "awake"}
    assert (doc["error"], doc["stored"], doc["sleep"], doc["awake"]) == ("halted", True, 300, 900)


# -- the offer ----------------------------------------------------------------------------------


async def test_a_staged_bundle_is_offered_to_a_board_running_another_version(client, journal, node):
    stage(journal)
    resp, doc = await put(client, fw("v1"))
    assert resp.status == 202
    assert doc["update"] == offer()
    assert set(doc) == {"stored", "node", "time", "sleep", "update"}
    assert len(stored(journal)) == 1


async def test_a_halted_board_is_offered_the_update_in_its_423_too(client, journal, node):
    stage(journal)
    journal.set_halt(None, True)
    resp, doc = await put(client, fw("v1"))
    assert resp.status == 423
    assert doc["update"] == offer() and doc["awake"] == 600


async def test_nothing_is_offered_when_nothing_is_staged(client, journal, node):
    resp, doc = await put(client, fw("v1"))
    assert resp.status == 202 and "update" not in doc


async def test_nothing_is_offered_to_a_board_running_the_staged_version(client, journal, node):
    stage(journal)
    resp, doc = await put(client, fw(V2))
    assert resp.status == 202 and "update" not in doc


async def test_a_bundle_staged_for_another_node_is_not_offered(client, journal, node):
    register(journal, "n2", "pw2", created=True)
    stage(journal, nodes=["n2"])
    resp, doc = await put(client, fw("v1"))
    assert "update" not in doc
    resp, doc = await put(client, fw("v1", login="n2", password="pw2"), name="n2")
    assert doc["update"] == offer()


async def test_a_board_that_rolled_back_is_not_offered_that_version_again_until_it_is_staged_again(client, journal, node):
    stage(journal)
    resp, doc = await put(client, fw("v1", rolled_back=V2))
    assert resp.status == 202 and "update" not in doc
    state = journal.firmware_state("n1")
    assert (state.running, state.rolled_back, bundles.outcome(state)[0]) == ("v1", V2, "rolled_back")
    resp, doc = await put(client, fw("v1"))  # the next wake, without the header: still not offered
    assert "update" not in doc
    stage(journal)  # staged again: offered again
    resp, doc = await put(client, fw("v1"))
    assert doc["update"] == offer()


async def test_a_new_bundle_staged_after_a_rollback_is_offered(client, journal, node):
    stage(journal)
    await put(client, fw("v1", rolled_back=V2))
    files = [("node.py", b"fixed\n")]
    v3 = stage(journal, files)
    resp, doc = await put(client, fw("v1"))
    assert doc["update"] == offer(v3, files)


async def test_a_config_patch_is_offered_like_any_bundle(client, journal, node):
    files = bundles.config_patch({"netconf": {"ssid": ["new"], "password": ["pw"]}})
    version = stage(journal, files)
    resp, doc = await put(client, fw("unknown"))
    assert doc["update"] == offer(version, files)


async def test_a_config_patch_with_a_character_beyond_u_ffff_is_served_as_offered_and_as_utf8(client, journal, node):
    """The offer's size and SHA-256 are those of the bytes served, and those bytes carry the SSID as
    UTF-8 (not the surrogate pair MicroPython's json would read as other bytes)."""
    ssid = "\U0001f3e0 home"
    files = bundles.config_patch({"netconf": {"ssid": [ssid], "password": ["pw"]}})
    version = stage(journal, files)
    resp, doc = await put(client, fw("v1"))
    assert doc["update"] == offer(version, files)
    (entry,) = doc["update"]["files"]
    got = await client.get(url(version, bundles.CONFIG_PATCH), headers=hdr())
    content = await got.read()
    assert (len(content), hashlib.sha256(content).hexdigest()) == (entry["size"], entry["sha256"])
    assert ssid.encode() in content


# -- what a board reports -----------------------------------------------------------------------


async def test_the_version_a_board_runs_is_recorded_and_the_update_shows_as_updated(client, journal, node):
    await put(client, fw("v1"))
    first = journal.firmware_state("n1")
    assert first.running == "v1" and first.reported_at is not None
    await put(client, fw("v1"))
    assert journal.firmware_state("n1") == first  # the same version again: nothing written
    stage(journal)
    assert bundles.outcome(journal.firmware_state("n1"))[0] == "pending"
    resp, doc = await put(client, fw(V2))
    assert "update" not in doc
    state = journal.firmware_state("n1")
    assert state.running == V2 and bundles.outcome(state) == ("updated", state.updated_at)
    assert state.updated_at >= first.reported_at


async def test_a_board_back_on_the_version_it_rolled_back_from_shows_as_updated_and_is_offered_nothing(client, journal, node):
    """Rolled back from V2, then flashed with V2 by cable: it reports V2, and the outcome says so
    (before: "rolled back from V2" while it ran V2)."""
    stage(journal)
    await put(client, fw("v1"))
    await put(client, fw(V2))  # its trial's first wake
    await put(client, fw("v1", rolled_back=V2))  # then it gave V2 up
    assert bundles.outcome(journal.firmware_state("n1"))[0] == "rolled_back"
    resp, doc = await put(client, fw(V2))
    assert resp.status == 202 and "update" not in doc
    state = journal.firmware_state("n1")
    assert state.running == V2 and bundles.outcome(state) == ("updated", state.reported_at)
    assert state.reported_at > state.rolled_back_at


async def test_a_reading_is_acknowledged_when_the_firmware_report_cannot_be_written(client, journal, node, monkeypatch):
    """The report is written after the reading's commit; a storage that fails just then (a database
    gone between the two writes) cannot be made to happen on cue, so the report is replaced by one
    that raises (the only stand-in here): the board gets its 202, without an offer."""
    stage(journal)
    calls = []

    def failing(self, *args):
        calls.append(args)
        raise StorageUnavailable("gone for a moment")

    monkeypatch.setattr(type(journal), "report_firmware", failing)
    resp, doc = await put(client, fw("v1"))
    assert resp.status == 202 and "update" not in doc and doc["stored"] is True
    assert len(calls) == 1 and len(stored(journal)) == 1
    monkeypatch.undo()
    resp, doc = await put(client, fw("v1"))
    assert doc["update"] == offer()


BAD_HEADERS = {
    "empty": {"X-Tswarm-Firmware": ""},
    "space": {"X-Tswarm-Firmware": "v 1"},
    "slash": {"X-Tswarm-Firmware": "../v1"},
    "too-long": {"X-Tswarm-Firmware": "v" * 65},
    "non-ascii": {"X-Tswarm-Firmware": "v\u00e91"},
    "rolled-back-alone": {"X-Tswarm-Rolled-Back": "v1"},
    "bad-rolled-back": {"X-Tswarm-Firmware": "v1", "X-Tswarm-Rolled-Back": "v 2"},
}


@pytest.mark.parametrize("extra", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
async def test_a_bad_firmware_header_is_a_400_and_nothing_is_stored(client, journal, node, extra):
    stage(journal)
    resp = await client.put("/api/nodes/n1", data=body(), headers={**hdr(), **extra})
    await assert_error(resp, 400, "bad_firmware_version")
    assert stored(journal) == []
    assert journal.firmware_state("n1") == FirmwareState(staged=V2, staged_at=T)


async def test_a_firmware_header_sent_twice_is_a_400(client, journal, node):
    from multidict import CIMultiDict

    headers = CIMultiDict(hdr())
    headers.add("X-Tswarm-Firmware", "v1")
    headers.add("X-Tswarm-Firmware", "v2")
    resp = await client.put("/api/nodes/n1", data=body(), headers=headers)
    await assert_error(resp, 400, "bad_firmware_version")
    assert stored(journal) == []


async def test_a_bad_firmware_header_is_refused_before_the_login(client, journal, node):
    resp = await client.put("/api/nodes/n1", data=body(), headers={**hdr(password="wrong"), "X-Tswarm-Firmware": "a b"})
    await assert_error(resp, 400, "bad_firmware_version")


# -- the file route -----------------------------------------------------------------------------


def url(version=V2, file="node.py", name="n1"):
    return f"/api/nodes/{name}/firmware/{version}/{file}"


async def test_a_node_fetches_each_file_of_its_update(client, journal, node):
    stage(journal)
    resp, doc = await put(client, fw("v1"))
    base = "/api/nodes/n1"  # as the board builds it: the reading's URL + /firmware/V/name
    for f in doc["update"]["files"]:
        got = await client.get(f"{base}/firmware/{doc['update']['version']}/{f['name']}", headers=hdr())
        assert got.status == 200
        content = await got.read()
        assert (len(content), hashlib.sha256(content).hexdigest()) == (f["size"], f["sha256"])
        assert got.content_type == "application/octet-stream"
        assert got.headers["Content-Length"] == str(f["size"])
        assert got.headers["ETag"] == f'"{f["sha256"]}"'
    assert await (await client.get(url(), headers=hdr())).read() == NODE_PY


async def test_head_gives_the_length_and_etag_without_the_bytes(client, journal, node):
    stage(journal)
    resp = await client.head(url(), headers=hdr())
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(NODE_PY))
    assert resp.headers["ETag"] == f'"{hashlib.sha256(NODE_PY).hexdigest()}"'
    assert await resp.read() == b""


async def test_a_version_not_staged_for_the_node_is_404_not_staged(client, journal, node):
    resp = await client.get(url(), headers=hdr())  # nothing staged
    await assert_error(resp, 404, "not_staged")
    stage(journal)
    for version in ("0123456789abcdef", "a b", "v.1", "x" * 100):
        await assert_error(await client.get(url(version=version), headers=hdr()), 404, "not_staged")
    journal.stage_bundle(None, ["n1"], T)  # unstaged: no longer served
    await assert_error(await client.get(url(), headers=hdr()), 404, "not_staged")


async def test_a_file_not_in_the_bundle_is_404_no_such_file(client, journal, node):
    stage(journal)
    for file in ("main.py", "config.json", "node.py.bak", "x y.py", "." + "x" * 60):
        await assert_error(await client.get(url(file=file), headers=hdr()), 404, "no_such_file")


async def test_a_node_never_reads_another_nodes_update(client, journal, node):
    register(journal, "n2", "pw2", created=True)
    secret = [("node.py", b"n2 only\n")]
    v_n2 = stage(journal, secret, nodes=["n2"])
    # its own credentials at the other node's URL: 403, as for a reading
    await assert_error(await client.get(url(v_n2, name="n2"), headers=hdr()), 403, "wrong_node")
    # the other node's version at its own URL: not staged for it
    await assert_error(await client.get(url(v_n2), headers=hdr()), 404, "not_staged")
    # the other node's name with a wrong password, and no credentials: 401
    for headers in (hdr("n2", "wrong"), {}):
        resp = await client.get(url(v_n2, name="n2"), headers=headers)
        await assert_error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="tswarm"'
    got = await client.get(url(v_n2, name="n2"), headers=hdr("n2", "pw2"))
    assert got.status == 200 and await got.read() == b"n2 only\n"


async def test_the_file_route_counts_failed_logins_like_a_reading(make_client, journal, node):
    stage(journal)
    client = await make_client(auth_max_failures=3, auth_window=60)
    for _ in range(3):
        assert (await client.get(url(), headers=hdr(password="nope"))).status == 401
    resp = await client.get(url(), headers=hdr(password="nope"))
    await assert_error(resp, 429, "too_many_failures")
    assert int(resp.headers["Retry-After"]) > 0


@pytest.mark.engines("postgres")
async def test_the_file_route_answers_503_while_postgres_is_away(make_client, postgres_factory):
    """A private PostgreSQL cluster stops under a running app: the node's lookup cannot be made, so
    a 503 with Retry-After (the board keeps what it runs and tries on a later wake)."""
    from tswarm.storage import open_storage

    server = postgres_factory()
    db = server.new_database()
    with open_storage("", db) as journal:
        register(journal, "n1", PW, created=True)
        stage(journal)
    client = await make_client(database_url=db)
    assert (await client.get(url(), headers=hdr())).status == 200
    server.stop()
    resp = await client.get(url(), headers=hdr())
    await assert_error(resp, 503, "journal_unavailable")
    assert int(resp.headers["Retry-After"]) > 0
    server.start()
    assert (await client.get(url(), headers=hdr())).status == 200
