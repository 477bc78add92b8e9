"""create_app (service/app.py): every key and every resource of the app is declared there."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import tswarm
from tests.servers import unavailable_here
from tswarm import keys

SERVICE = Path(tswarm.__file__).parent


def test_keys_are_declared_only_in_keys_py_and_resources_only_in_app_py():
    declares = {
        "web.AppKey(": ["keys.py"],
        "cleanup_ctx.append(": ["app.py", "workers.py"],  # workers.py: the worker's own, around create_app
        "on_startup.append(": ["app.py"],
        "on_shutdown.append(": [],
        "on_cleanup.append(": [],
    }
    for needle, expected in declares.items():
        found = sorted(p.name for p in SERVICE.rglob("*.py") if needle in p.read_text())
        assert found == expected, needle


async def test_every_declared_key_is_set_once_the_app_runs(make_client):
    client = await make_client()  # store=sqlite: no forwarder, but a LEADER (who would run one) all the same
    declared = {name: key for name, key in vars(keys).items() if isinstance(key, web.AppKey)}
    assert set(declared) >= {"CONFIG", "JOURNAL", "WRITER", "STORAGE", "CREDENTIALS", "GUARD", "HASHER",
                             "READERS", "STATS", "METRICS", "LEADER", "KEPT_READ_TOKEN"}
    missing = sorted(name for name, key in declared.items() if key not in client.app)
    assert missing == []


# -- /healthz: the storage engine, whether it answers, whether this process leads ----------------------


async def test_healthz_names_the_engine_where_it_is_and_that_it_answers(make_client, data_dir):
    health = await (await (await make_client()).get("/healthz")).json()
    assert health["storage"] == {"engine": "sqlite", "where": str(data_dir / "tswarm.db"), "reachable": True}
    assert health["leader"] is False  # store=sqlite and no retention: nothing runs once, nobody leads
    assert {"ok", "store", "backlog", "oldest_age_s", "last_error", "worker", "pid", "queued"} <= set(health)


async def test_healthz_says_whether_this_process_leads(make_client):
    pruning = {"journal_retention": 3600}  # the pruner: something to run once
    assert (await (await (await make_client(**pruning)).get("/healthz")).json())["leader"] is True
    other_worker = await make_client(worker=1, **pruning)  # SQLite: worker 0 alone leads
    assert (await (await other_worker.get("/healthz")).json())["leader"] is False


async def test_healthz_on_postgresql_shows_the_url_without_its_password(make_client, postgres, postgres_url):
    client = await make_client(database_url=postgres_url, journal_retention=3600)
    resp = await client.get("/healthz")
    text = await resp.text()
    health = await resp.json()
    assert resp.status == 200 and health["ok"] is True and health["leader"] is True
    assert health["storage"] == {
        "engine": "postgresql", "where": postgres_url.replace(postgres.PASSWORD, "***"), "reachable": True,
    }
    assert postgres.PASSWORD not in text


async def test_healthz_answers_503_with_the_reason_while_postgresql_is_stopped(make_client, postgres_factory):
    server = postgres_factory()
    client = await make_client(database_url=server.new_database())
    assert (await client.get("/healthz")).status == 200
    server.stop()
    resp = await client.get("/healthz")
    text = await resp.text()
    health = await resp.json()
    assert resp.status == 503 and health["ok"] is False and health["error"] == "storage_unavailable"
    storage = health["storage"]
    assert storage["engine"] == "postgresql" and storage["reachable"] is False
    assert storage["reason"] == health["detail"] and "\n" not in storage["reason"]
    # refused ("PostgreSQL at ... is unavailable: ...") or, while the pool still retries, unanswered
    assert f"postgresql://postgres:***@127.0.0.1:{server.port}/" in storage["reason"]
    assert server.PASSWORD not in text
    assert {"store", "leader", "worker", "pid", "queued"} <= set(health)
    server.start()  # back: the same app answers 200 again, without a restart
    assert (await client.get("/healthz")).status == 200


def _paused(server):
    """SIGSTOP the cluster's postmaster and every backend (root may signal the postgres user's
    processes): connections stay open and nothing answers, as on a hung database host."""
    import contextlib
    import os
    import signal

    @contextlib.contextmanager
    def pause():
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in __import__("pathlib").Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                pass
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    return pause()


async def test_healthz_answers_while_postgresql_hangs(make_client, postgres_factory):
    """The journal's read runs in a storage thread with a deadline: a database that accepts nothing
    and answers nothing gives a 503 instead of a /healthz that never answers (or blocks the loop)."""
    import os

    if os.geteuid() != 0:
        unavailable_here("pausing PostgreSQL needs root (it runs as the postgres user)")
    server = postgres_factory()
    client = await make_client(database_url=server.new_database())
    assert (await client.get("/healthz")).status == 200
    with _paused(server):
        resp = await client.get("/healthz", timeout=aiohttp.ClientTimeout(total=60))
        health = await resp.json()
        assert resp.status == 503 and health["storage"]["reachable"] is False
        assert health["storage"]["reason"] == f"the journal at {health['storage']['where']} did not answer within 2 s"
