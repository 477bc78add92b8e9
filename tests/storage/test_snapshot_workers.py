"""The registry snapshot across the real `tswarm serve --workers 2`: a change made through one
worker's admin API is seen by the other worker's next request, although that worker's snapshot had
the node's record (each worker is a process of its own, with a snapshot of its own).

Each worker is reached on a keep-alive connection of its own (a connection stays with the worker
that accepted it; ``/healthz`` on it says which one), so the test knows which process answers. On SQLite the other worker's very next request sees the
change; on PostgreSQL the first one after the change's notification reached that worker (sent as the
change commits; service/storage/postgres/cache.py), within :data:`WITHIN_S`, a bound on correctness.
"""
from __future__ import annotations

import http.client
import json
import time

import pytest

from tswarm import auth
from tswarm.storage import open_storage

from ..conftest import ENGINE
from ..servers import ServiceProcess, tswarm_env

pytestmark = [pytest.mark.integration, pytest.mark.engines]

PW = "pw-snapshot-workers"
ADMIN = "admin-token-0123456789"
UP_S = 30.0
WITHIN_S = 1.0


def next_put(conn, expected: int) -> int:
    """The status of the next PUT that can see a change just committed by another process (see
    above): on PostgreSQL, PUTs until one answers ``expected`` or :data:`WITHIN_S` has passed."""
    status = put(conn)
    deadline = time.monotonic() + WITHIN_S
    while ENGINE.name == "postgres" and status != expected and time.monotonic() < deadline:
        time.sleep(0.01)
        status = put(conn)
    return status


def connections_to_each_worker(service, count: int = 2) -> dict[int, http.client.HTTPConnection]:
    """``{worker index: a keep-alive connection that it accepted}``."""
    found: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + UP_S
    while len(found) < count:
        assert time.monotonic() < deadline, f"only workers {sorted(found)} accepted a connection"
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        worker = json.loads(_call(conn, "GET", "/healthz")[1])["worker"]
        if worker in found:
            conn.close()
        else:
            found[worker] = conn
    return found


def _call(conn, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def put(conn) -> int:
    headers = {"Authorization": " Basic " + auth.xauth("a", PW), "Content-Type": "application/json"}
    return _call(conn, "PUT", "/api/nodes/a", {"name": "a", "data": "21.5 40"}, headers)[0]


def admin(conn, path: str) -> None:
    status, body = _call(conn, "POST", path, {}, {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200, body


def test_a_change_through_one_workers_admin_api_is_seen_by_the_other_workers_next_request(tmp_path):
    data_dir = tmp_path / "data"
    with open_storage(data_dir, ENGINE.database_url) as journal:
        journal.add_node("a", auth.hash_password(PW, n=2**4))
        journal.mark_created("a", 1)
    env = tswarm_env(data_dir, TSWARM_ADMIN_TOKEN=ADMIN)
    with ServiceProcess(data_dir, env=env, args=("--workers", "2")) as service:
        workers = connections_to_each_worker(service)
        try:
            for conn in workers.values():  # each worker keeps the record (the first PUT reads it; the rest are served)
                assert [put(conn) for _ in range(3)] == [202] * 3
            admin(workers[0], "/api/admin/nodes/a/halt")
            assert next_put(workers[1], 423) == 423
            assert put(workers[0]) == 423  # the worker that made the change: at once on either engine
            admin(workers[1], "/api/admin/nodes/a/resume")
            assert next_put(workers[0], 202) == 202
            assert put(workers[1]) == 202
            admin(workers[1], "/api/admin/halt")  # every node
            assert next_put(workers[0], 423) == 423
            admin(workers[0], "/api/admin/resume")
            assert next_put(workers[1], 202) == 202
        finally:
            for conn in workers.values():
                conn.close()
