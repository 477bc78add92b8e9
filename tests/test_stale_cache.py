"""A refusal never rests on a change that has not been announced yet.

On PostgreSQL each process serves nodes' records from a cache that another process's change clears by
a notification (service/storage/postgres/cache.py); between that change's commit and the
notification's arrival the cache is behind. A 401 (wrong password), a 405 (never created) and a 423
(halted: the board stays awake) are therefore checked once more against the database before they are
given: a new password set by the CLI, a node's first POST or a resume through another instance,
applies on the very next request. Here the
journal's triggers are switched off, so no notification ever comes: only the re-check can see the change.
"""
from __future__ import annotations

import json
import time

import psycopg
import pytest

from tswarm import auth

from .conftest import ENGINE, register

pytestmark = pytest.mark.engines("postgres")


def _sql(statement: str, params=()) -> None:
    with psycopg.connect(ENGINE.database_url, autocommit=True) as conn:
        conn.execute(statement, params)


@pytest.fixture
def unannounced():
    """Changes made meanwhile reach no listener (the triggers that notify are off)."""
    _sql("ALTER TABLE nodes DISABLE TRIGGER USER")
    _sql("ALTER TABLE meta DISABLE TRIGGER USER")
    yield
    _sql("ALTER TABLE nodes ENABLE TRIGGER USER")
    _sql("ALTER TABLE meta ENABLE TRIGGER USER")


async def _send(client, method: str, password: str) -> int:
    resp = await client.request(method, "/api/nodes/a", data=json.dumps({"name": "a", "data": "21.5 40"}),
                                headers={"Authorization": " Basic " + auth.xauth("a", password)})
    return resp.status


def listening(journal):
    """The process's registry cache (the server's storage shares it with the test's), listening."""
    journal.node_auth("a")
    cache = journal._registry_cache
    deadline = time.monotonic() + 10
    while not cache.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.listening
    return cache


async def test_a_password_changed_unannounced_is_taken_on_the_next_request(make_client, journal, unannounced):
    register(journal, "a", "pw-a", created=True)
    client = await make_client()
    cache = listening(journal)
    assert await _send(client, "PUT", "pw-a") == 202
    assert await _send(client, "PUT", "pw-a") == 202 and cache.cached("a") is not None  # served from the cache
    _sql("UPDATE nodes SET password_hash = %s WHERE name = 'a'", (auth.hash_password("pw-new", n=2),))  # another process; nobody is told
    assert await _send(client, "PUT", "pw-new") == 202  # the 401 it would be is checked first
    assert await _send(client, "PUT", "pw-new") == 202  # and the cache no longer holds the old record
    assert await _send(client, "PUT", "wrong") == 401


async def test_a_first_post_through_another_instance_ends_the_405_on_the_next_put(make_client, journal, unannounced):
    register(journal, "a", "pw-a", created=False)
    client = await make_client()
    cache = listening(journal)
    assert await _send(client, "PUT", "pw-a") == 405
    assert await _send(client, "PUT", "pw-a") == 405 and not cache.cached("a").created  # cached as never created
    _sql("UPDATE nodes SET created_at = 1 WHERE name = 'a'")  # the other instance's POST, unannounced
    assert await _send(client, "PUT", "pw-a") == 202


async def test_a_resume_through_another_instance_ends_the_423_on_the_next_request(make_client, journal, unannounced):
    register(journal, "a", "pw-a", created=True)
    _sql("UPDATE nodes SET halted = true WHERE name = 'a'")
    client = await make_client()
    cache = listening(journal)
    assert await _send(client, "PUT", "pw-a") == 423
    assert await _send(client, "PUT", "pw-a") == 423 and cache.cached("a").halted  # cached as halted
    _sql("UPDATE nodes SET halted = false WHERE name = 'a'")  # the other instance's resume, unannounced
    assert await _send(client, "PUT", "pw-a") == 202
    assert await _send(client, "PUT", "pw-a") == 202
