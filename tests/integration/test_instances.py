"""Two `tswarm serve` instances on one PostgreSQL database, forwarding to one real InfluxDB 1.x.

Each instance has its own data dir and port, as two machines behind a load balancer would; they
share the registry and the journal through the session's PostgreSQL cluster (a fresh database for
this test) and write into the session's ``influxd`` (its own database). What one instance is told
(a node added, a halt), the other sees on its next request; exactly one of them forwards, and when
it is killed the other takes over, with every acknowledged reading in InfluxDB exactly once.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tswarm import auth
from tswarm.storage import open_storage
from tests.integration.test_influx import influx1_env, wait_for
from tests.integration.test_workers import post as post_as
from tests.servers import ServiceProcess, basic, request, run_cli

pytestmark = pytest.mark.integration

PW = "pw-instances-test"
ADMIN = "admin-token-instances"
NODES = [f"n{i}" for i in range(6)]


def post(service, name: str, data: str) -> int:
    """One reading over a new connection, as the firmware sends it; its status."""
    return post_as(service, name, data, PW)


def healthz(service) -> dict:
    return json.loads(request("GET", service.url + "/healthz", timeout=10)[2])


def admin(service, path: str) -> int:
    return request("POST", service.url + path, b"", {"Authorization": f"Bearer {ADMIN}"})[0]


@pytest.fixture
def two_instances(tmp_path, postgres, influxdb1):
    url, db = postgres.new_database(), influxdb1.new_database()
    envs = [influx1_env(tmp_path / name, influxdb1, db, TSWARM_DATABASE_URL=url, TSWARM_ADMIN_TOKEN=ADMIN)
            for name in ("a", "b")]
    with open_storage("", url) as journal:  # the load's nodes, with a cheap hash (verified whatever it carries)
        for name in NODES:
            journal.add_node(name, auth.hash_password(PW, n=2**4))
    services = [ServiceProcess(tmp_path / name, env=env) for name, env in zip("ab", envs)]
    try:
        for service in services:
            service.start()
        yield services, envs, url, db
    finally:
        for service in services:
            service.kill()


def test_two_instances_share_the_registry_and_one_of_them_forwards_and_takes_over(two_instances, influxdb1):
    (a, b), (env_a, _), url, db = two_instances

    # A node added through one instance's setup is accepted by both; a halt through one, seen by both.
    run_cli(a.data_dir, "node", "add", "porch", "--password", PW, env=env_a)
    assert post(a, "porch", "20 50") == 202 and post(b, "porch", "20.5 50") == 202
    assert admin(a, "/api/admin/nodes/porch/halt") == 200
    assert post(b, "porch", "21 50") == 423 and post(a, "porch", "21.5 50") == 423
    assert admin(b, "/api/admin/nodes/porch/resume") == 200
    assert post(a, "porch", "22 50") == 202 and post(b, "porch", "22.5 50") == 202

    # Exactly one leader; it forwards what the other instance committed too.
    leaders = {service.port: healthz(service)["leader"] for service in (a, b)}
    assert sorted(leaders.values()) == [False, True], leaders
    leader, other = (a, b) if leaders[a.port] else (b, a)
    assert healthz(leader)["storage"]["engine"] == "postgresql" and "in_flight" not in healthz(other)
    assert post(other, "porch", "23 50") == 202
    wait_for(lambda: ["porch", 23.0, 50.0] in _points(influxdb1, db), "the other instance's reading in InfluxDB", 15)

    # A small load over both; the leader is killed in the middle of it.
    acknowledged: list[tuple[str, float, float]] = []
    targets = [leader, other]
    stop = threading.Event()

    def send(name: str) -> None:
        for k in itertools.count():
            if stop.is_set():
                return
            temperature, humidity = k % 800 / 10, float(k // 800)  # every reading of a node its own values
            service = targets[k % len(targets)]
            try:
                status = post(service, name, f"{temperature:.1f} {humidity:.0f}")
            except OSError:  # the killed one: not acknowledged, so nothing is promised
                continue
            if status == 202:
                acknowledged.append((name, temperature, humidity))
            else:
                assert service is leader and status >= 500, status  # only an answer of the dying one may fail

    with ThreadPoolExecutor(len(NODES)) as pool:
        senders = [pool.submit(send, name) for name in NODES]
        wait_for(lambda: len(acknowledged) >= 150, "some load", 20)
        leader.kill()  # SIGKILL: its lock's session ends with the process
        targets.remove(leader)
        before = len(acknowledged)
        wait_for(lambda: healthz(other)["leader"], "the other instance to take over forwarding", 15)
        wait_for(lambda: len(acknowledged) >= before + 150, "readings taken by the survivor", 20)
        stop.set()
        for sender in senders:
            sender.result()  # a sender's failed assertion fails the test
    wait_for(lambda: (h := healthz(other))["backlog"] == 0 and h["in_flight"] == 0, "the backlog forwarded", 20)

    in_influx = Counter(tuple(point) for point in _points(influxdb1, db))
    assert all(in_influx[reading] == 1 for reading in acknowledged), [r for r in acknowledged if in_influx[r] != 1][:5]
    assert max(in_influx.values()) == 1  # a point written twice (same timestamp) is kept once
    with open_storage("", url) as journal:
        stored = Counter((r.node, r.temperature, r.humidity) for r in journal.outbox_readings(0, 10**9))
    assert all(stored[reading] == 1 for reading in acknowledged)
    assert set(in_influx) == set(stored)  # forwarded: everything the journal holds, and nothing else
    assert "holds the singleton lock" in other.log()


def _points(server, db) -> list[list]:
    """``[node, temperature, humidity]`` of every point in the test's InfluxDB database."""
    return [row[1:] for row in server.rows("SELECT node, temperature, humidity FROM climate", db)]


def put(service, name: str, data: str, password: str = PW) -> int:
    """A PUT (a reading of a node already created), over a new connection; its status."""
    headers = {"Authorization": basic(name, password), "Content-Type": "application/json"}
    return request("PUT", f"{service.url}/api/nodes/{name}", json.dumps({"name": name, "data": data}), headers)[0]


def test_what_the_cli_or_one_instance_changes_both_instances_apply_on_their_next_request(two_instances):
    """Each instance keeps its nodes' records in memory (service/storage/postgres/cache.py); every
    change of the registry, made by the CLI or by the other instance, still applies to the next request."""
    (a, b), (env_a, _), _url, _db = two_instances
    for service in (a, b):  # each instance has looked the node up (and kept its record) more than once
        for _ in range(3):
            assert post(service, "n0", "20 50") == 202

    # a new password through the CLI: the old one is refused by both at once, the new one taken
    run_cli(a.data_dir, "node", "passwd", "n0", "--password", "pw-changed-by-cli", env=env_a)
    assert post(a, "n0", "21 50") == 401 and post(b, "n0", "21 50") == 401
    assert post_as(a, "n0", "21 50", "pw-changed-by-cli") == 202
    assert post_as(b, "n0", "21 50", "pw-changed-by-cli") == 202

    # a node never created gets 405 for a PUT from both; its first POST, on one, lets both take PUTs
    run_cli(a.data_dir, "node", "add", "attic", "--password", PW, env=env_a)
    assert put(a, "attic", "20 50") == 405 and put(b, "attic", "20 50") == 405
    assert post(a, "attic", "20 50") == 202
    assert put(b, "attic", "20.5 50") == 202 and put(a, "attic", "21 50") == 202

    # every node halted through the CLI, then resumed; a node removed through the CLI
    run_cli(a.data_dir, "halt", env=env_a)
    assert put(a, "attic", "21 50") == 423 and put(b, "attic", "21 50") == 423
    run_cli(a.data_dir, "resume", env=env_a)
    assert put(a, "attic", "22 50") == 202 and put(b, "attic", "22 50") == 202
    run_cli(a.data_dir, "node", "remove", "attic", env=env_a)
    assert put(a, "attic", "23 50") == 401 and put(b, "attic", "23 50") == 401
