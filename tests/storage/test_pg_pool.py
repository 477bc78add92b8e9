"""The PostgreSQL engine's connections: one pool per process and URL, shared by every storage of the
process, sized by ``TSWARM_DATABASE_POOL``; a forked process makes its own; the pool recovers after a
restart of the server. Counted in the real cluster's ``pg_stat_activity`` (tests/servers.py)."""
from __future__ import annotations

import concurrent.futures
import json
import os
import time

import psycopg
import pytest

from tswarm.storage import StorageUnavailable
from tswarm.storage.postgres import PostgresStorage

from ..servers import ServiceProcess, add_node, basic, request, tswarm_env
from .conftest import add_nodes

PASSWORD = "pw-" + "x" * 8


def _sessions(url: str) -> set[int]:
    """The backend PIDs of the client sessions on ``url``'s database, but this one."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )}


def _connections(url: str) -> int:
    return len(_sessions(url))


def _busy(service: ServiceProcess, names: list[str], requests: int = 120) -> None:
    """Readings, lookups, admin-free reads and exports at once: every storage of the process is opened
    and every thread wants a connection at the same time."""
    def one(i: int) -> int:
        name = names[i % len(names)]
        if i % 6 == 5:
            return request("GET", service.url + "/api/readings?format=csv")[0]
        if i % 6 == 4:
            return request("GET", service.url + ("/metrics" if i % 12 == 4 else "/api/nodes"))[0]
        body = json.dumps({"name": name, "data": "21.5 40.0"})
        return request("POST", f"{service.url}/api/nodes/{name}", body, {"Authorization": basic(name, PASSWORD),
                                                                          "Content-Type": "application/json"})[0]

    with concurrent.futures.ThreadPoolExecutor(24) as threads:
        statuses = list(threads.map(one, range(requests)))
    assert set(statuses) <= {200, 202}, statuses


@pytest.mark.parametrize("workers, pool", [(1, 3), (2, 2)])
def test_a_serving_process_holds_at_most_its_pool_its_writer_its_lock_and_its_listener(
    postgres_url, tmp_path, workers, pool
):
    env = tswarm_env(tmp_path / "data", TSWARM_DATABASE_URL=postgres_url, TSWARM_DATABASE_POOL=str(pool),
                     TSWARM_JOURNAL_RETENTION="30d")  # the pruner runs too
    names = [f"n{i}" for i in range(6)]
    for name in names:
        add_node(tmp_path / "data", name, PASSWORD, env=env)
    with ServiceProcess(tmp_path / "data", env=env, args=("--workers", str(workers))) as service:
        for _ in range(3):
            _busy(service, names)
        held = _connections(postgres_url)
    # per process: a pool, a writer, the leader's lock and the registry cache's listener
    assert 2 * workers <= held <= workers * (pool + 3), held
    deadline = time.monotonic() + 30
    while _connections(postgres_url) and time.monotonic() < deadline:  # closed with the process
        time.sleep(0.1)
    assert _connections(postgres_url) == 0


def test_the_storages_of_a_process_share_one_pool_closed_with_the_last(postgres_url):
    storages = [PostgresStorage(postgres_url, pool_size=3) for _ in range(6)]
    pool = storages[0].pool
    assert all(s.pool is pool for s in storages) and pool.max_size == 3
    add_nodes(storages[0], "a")
    with concurrent.futures.ThreadPoolExecutor(6) as threads:  # six threads, each with its own storage
        assert set(threads.map(lambda s: [s.node_auth("a").name for _ in range(50)][0], storages)) == {"a"}
    assert _connections(postgres_url) <= 3 + 1  # the pool's, and the registry cache's listener (node_auth)
    for storage in storages[:-1]:
        storage.close()
        storage.close()  # twice is once: the others keep the pool
    assert not pool.closed and storages[-1].node_auth("a").name == "a"
    listener = storages[-1]._registry_cache
    assert listener is not None and all(s._registry_cache in (None, listener) for s in storages)
    storages[-1].close()
    assert pool.closed and not listener._thread.is_alive()  # the listener closed with the last storage
    with PostgresStorage(postgres_url) as again:  # a new one after the last closed
        assert again.pool is not pool and again.node_auth("a").name == "a"


def test_a_refused_open_gives_the_pool_back(postgres_url):
    with PostgresStorage(postgres_url) as storage:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = version + 1")
        with pytest.raises(Exception):
            PostgresStorage(postgres_url)
        pool = storage.pool
    assert pool.closed  # the refused one did not keep it open


def test_a_forked_process_makes_its_own_pool_and_leaves_the_parents_alone(postgres_url):
    with PostgresStorage(postgres_url) as parent:
        add_nodes(parent, "a")
        parents = _sessions(postgres_url)  # the parent's pool's, the only ones on this database
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: a storage of its own, then the inherited one closed
            code = 1
            try:
                with PostgresStorage(postgres_url) as mine:
                    own = mine.pool is not parent.pool
                    backend = mine._one("SELECT pg_backend_pid()")[0]
                    name = mine.node_auth("a").name
                parent.close()  # inherited: must not close the parent's pool nor its sockets
                os.write(write, json.dumps([own, backend, name]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(child, 0)
        own, backend, name = json.loads(os.read(read, 1000))
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert own and name == "a" and backend not in parents
        assert not parent.pool.closed
        assert parents <= _sessions(postgres_url)  # the parent's sessions live on: the child said no goodbye on them
        assert parent._one("SELECT pg_backend_pid()")[0] in parents
        assert parent.node_auth("a").name == "a"


def test_the_shared_pool_recovers_after_the_server_restarts(postgres_factory):
    server = postgres_factory()
    url = server.new_database()
    with PostgresStorage(url, pool_size=2) as one, PostgresStorage(url, pool_size=2) as two:
        add_nodes(one, "a")
        assert two.node_auth("a").name == "a"
        server.stop()
        for storage in (one, two):
            with pytest.raises(StorageUnavailable):
                storage.node_auth("a")
        server.start()
        assert [s.node_auth("a").name for s in (one, two)] == ["a", "a"]  # the same objects, no restart
        with PostgresStorage(url) as three:  # opened after the restart: the same, mended pool
            assert three.pool is one.pool and three.count_readings() == 0
        assert _connections(url) <= 2 + 1  # the pool's and the registry cache's listener
