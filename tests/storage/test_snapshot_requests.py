"""The registry snapshot seen through the node protocol: a node whose record has not changed is
answered without a storage read or a thread hop (service/pool.py's ``node_auth`` on the event
loop), and every change of its record, from anywhere, is seen by the very next request.

Each test runs on both engines (the real SQLite file; a real PostgreSQL database of the session's
cluster). "The next request": on SQLite the one right after the change's commit; on PostgreSQL, for
a change of another process, the one after its notification arrived (a moment after the commit:
:func:`announced`), the guarantee of the cache the snapshot is there. The changes come from where they come in production: the `tswarm` CLI as a child process
(tests/servers.py's ``run_cli``), the admin API of the same app, the writer's first POST, the
firmware report of a request, and plain SQL on a connection that runs no tswarm code. Before each
change the test first sees the node's record answered from the snapshot (its hit count moves), so
what follows proves that the change cleared it, not that nothing was kept.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import time

import pytest

from tswarm import auth, keys
from tswarm.storage import DB_FILENAME

from ..conftest import ENGINE, register
from ..servers import run_cli

pytestmark = pytest.mark.engines

PW, NEW_PW = "pw-snapshot-0123", "pw-snapshot-new-4567"
ADMIN = "admin-token-0123456789"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
UP_S = 10.0  # PostgreSQL's listener connects within this
WITHIN_S = 1.0  # PostgreSQL: another process's change is announced here within this (a bound on correctness)


async def send(client, method: str = "PUT", password: str = PW, name: str = "a", firmware: str | None = "v0"):
    """One reading of node ``name`` as the firmware sends it; ``(status, body)``."""
    headers = {"Authorization": " Basic " + auth.xauth(name, password), "Content-Type": "application/json"}
    if firmware is not None:
        headers["X-Tswarm-Firmware"] = firmware
    resp = await client.request(method, f"/api/nodes/{name}", data=json.dumps({"name": name, "data": "21.5 40"}),
                                headers=headers)
    return resp.status, await resp.json()


def pool_of(client):
    return client.server.app[keys.STORAGE]


def wait_listening(journal) -> None:
    """On PostgreSQL, the process's cache serves only once its listener listens (the app's snapshot
    is that cache): wait for it, as the first requests of a service do not."""
    if ENGINE.name != "postgres":
        return
    journal.node_auth("a")
    cache = journal._registry_cache
    deadline = time.monotonic() + UP_S
    while not cache.listening:
        assert time.monotonic() < deadline, "the registry listener never listened"
        time.sleep(0.01)


async def served_from_the_snapshot(client, password: str = PW) -> tuple[int, dict]:
    """A request of node ``a`` whose record the snapshot answers (after misses, if it must: on
    PostgreSQL a record read while a notification is on its way, such as that of the firmware report
    of the request before, is not kept, and the one after that keeps it)."""
    pool = pool_of(client)
    deadline = time.monotonic() + UP_S
    while True:
        hits = pool.snapshot_hits
        status, body = await send(client, password=password)
        if pool.snapshot_hits == hits + 1:
            return status, body
        assert time.monotonic() < deadline, "the record was never served from the snapshot"


@pytest.fixture
async def served(make_client, journal):
    register(journal, "a", PW, created=True)
    client = await make_client(admin_token=ADMIN)
    wait_listening(journal)
    assert (await send(client, firmware=None))[0] == 202  # nothing reported: no change of its record
    return client


def _files() -> list[dict]:
    return [{"name": "node.py", "content_b64": base64.b64encode(b"print('v2')\n").decode()}]


# (what changes, the `tswarm` command that changes it, the admin API request that does, the password
# of the requests after it, the answer they get)
STEPS = [
    ("halt", ("halt", "a"), ("POST", "/api/admin/nodes/a/halt", {}), PW, 423),
    ("resume", ("resume", "a"), ("POST", "/api/admin/nodes/a/resume", {}), PW, 202),
    ("halt all", ("halt",), ("POST", "/api/admin/halt", {}), PW, 423),
    ("resume all", ("resume",), ("POST", "/api/admin/resume", {}), PW, 202),
    ("interval", ("node", "interval", "a", "600"), ("PUT", "/api/admin/nodes/a/interval", {"interval_s": 600}), PW, 202),
    ("config push", ("node", "config", "a", "--push", "--wifi-ssid", "home", "--wifi-password", "s3cret-wifi"),
     ("POST", "/api/admin/nodes/a/config", {"patch": {"netconf": {"sleep": 600}}}), PW, 202),
    ("unstage", ("firmware", "cancel", "--node", "a"), ("DELETE", "/api/admin/nodes/a/firmware", {}), PW, 202),
    ("firmware push", ("firmware", "push", "--node", "a"), ("POST", "/api/admin/firmware", {"files": _files(), "nodes": ["a"]}),
     PW, 202),
    ("new password", ("node", "passwd", "a", "--password", NEW_PW),
     ("POST", "/api/admin/nodes/a/password", {"password": NEW_PW}), NEW_PW, 202),
    ("remove", ("node", "remove", "a"), ("DELETE", "/api/admin/nodes/a", {}), NEW_PW, 401),
]


async def _check_step(client, what: str, password: str, expected: int, data_dir) -> None:
    """The next request after the change ``what`` sees it."""
    if what == "new password":
        status, body = await send(client, password=PW)
        assert status == 401, f"after {what}: the old password still logged in: {body}"
    status, body = await send(client, password=password)
    assert status == expected, f"after {what}: {status} {body}"
    if what == "interval":
        assert body["sleep"] == 600
    if what in ("config push", "firmware push"):
        assert "update" in body and body["update"]["version"] != "v0", body
    if what == "unstage":
        assert "update" not in body, body


def announced(journal) -> None:
    """PostgreSQL: a change another process committed is seen here once its notification arrived
    (service/storage/postgres/cache.py; PostgreSQL sends it as the change commits): wait until the
    process's cache, which held node a's record, has let it go. SQLite: nothing to wait for, the
    version is read at every lookup."""
    if ENGINE.name != "postgres":
        return
    cache = journal._registry_cache
    deadline = time.monotonic() + WITHIN_S
    while cache.cached("a") is not None:
        assert time.monotonic() < deadline, "the change's notification never arrived"
        time.sleep(0.001)


async def test_every_change_made_by_the_cli_in_another_process_is_seen_by_the_next_request(served, journal, data_dir):
    password = PW
    for what, command, _, after, expected in STEPS:
        status, body = await served_from_the_snapshot(served, password)
        assert status in (202, 423), (what, status, body)
        run_cli(data_dir, *command)
        announced(journal)
        await _check_step(served, what, after, expected, data_dir)
        password = after


async def test_every_change_made_through_the_admin_api_is_seen_by_the_next_request(served, data_dir):
    password = PW
    for what, _, (method, path, body), after, expected in STEPS:
        await served_from_the_snapshot(served, password)
        resp = await served.request(method, path, json=body, headers=AS_ADMIN)
        assert resp.status in (200, 201), (what, resp.status, await resp.text())
        await _check_step(served, what, after, expected, data_dir)
        password = after


def _sql(data_dir, statement: str) -> None:
    """``statement`` on a connection of its own that runs no tswarm code, as the sqlite3 shell runs it."""
    conn = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


@pytest.mark.engines("sqlite")
async def test_a_change_made_by_hand_in_sql_is_seen_by_the_next_request(served, data_dir):
    """SQLite: the journal's own triggers move its registry version in the shell's transaction. (On
    PostgreSQL a change by hand is announced by its triggers' notification, which reaches this process
    a moment after the commit: tests/storage/test_pg_cache.py; a refusal is checked against the database
    first, tests/test_stale_cache.py.)"""
    await served_from_the_snapshot(served)
    _sql(data_dir, "UPDATE nodes SET halted = 1 WHERE name = 'a'")
    assert (await send(served))[0] == 423
    await served_from_the_snapshot(served)
    _sql(data_dir, "UPDATE nodes SET interval_s = 120, halted = 0")
    status, body = await send(served)
    assert (status, body["sleep"]) == (202, 120)
    await served_from_the_snapshot(served)
    _sql(data_dir, "UPDATE nodes SET removed_at = 1, password_hash = NULL")
    assert (await send(served))[0] == 401


async def test_a_first_post_is_seen_by_the_next_put_without_reading_past_the_snapshot(make_client, journal, monkeypatch):
    register(journal, "a", PW, created=False)
    client = await make_client()
    wait_listening(journal)
    pool = pool_of(client)
    assert (await send(client))[0] == 405
    hits = pool.snapshot_hits
    assert (await send(client))[0] == 405 and pool.snapshot_hits == hits + 1  # the snapshot has it, not created
    assert (await send(client, "POST"))[0] == 202  # the writer marks it created in the reading's commit
    lookups = []
    lookup = pool.node_auth

    async def node_auth(name, *, fresh=False):
        lookups.append(fresh)
        return await lookup(name, fresh=fresh)

    monkeypatch.setattr(pool, "node_auth", node_auth)
    assert (await send(client))[0] == 202
    assert lookups == [False]  # answered by the lookup itself: no re-read before a 405 was needed
    assert (await send(client))[0] == 202 and pool.snapshot_hits > hits + 1


async def test_a_firmware_report_is_seen_by_the_next_request_which_reports_nothing_again(served, journal, monkeypatch):
    reports = []
    report = type(journal).report_firmware

    def counting(self, name, running, rolled_back, at_ns):
        reports.append(running)
        return report(self, name, running, rolled_back, at_ns)

    monkeypatch.setattr(type(journal), "report_firmware", counting)
    for _ in range(3):
        assert (await send(served, firmware="v1"))[0] == 202
    for _ in range(3):
        assert (await send(served, firmware="v2"))[0] == 202
    assert reports == ["v1", "v2"]  # a stale record (still v0) would have had each request write again
    assert journal.node_auth("a").fw_running == "v2"


async def test_the_steady_state_makes_no_storage_read_and_no_thread_hop(served, journal, monkeypatch):
    pool = pool_of(served)
    assert (await send(served, firmware=None))[0] == 202  # kept: nothing changed since the fixture's
    reads, lookups = [], []
    read, node_auth = pool.read, type(journal).node_auth

    async def counting_read(fn, *args, **kwargs):
        reads.append(fn)
        return await read(fn, *args, **kwargs)

    def counting_node_auth(self, name, **kw):
        lookups.append(name)
        return node_auth(self, name, **kw)

    monkeypatch.setattr(pool, "read", counting_read)
    monkeypatch.setattr(type(journal), "node_auth", counting_node_auth)
    hits = pool.snapshot_hits
    for _ in range(100):
        assert (await send(served, firmware=None))[0] == 202
    assert (reads, lookups) == ([], [])
    assert pool.snapshot_hits == hits + 100
