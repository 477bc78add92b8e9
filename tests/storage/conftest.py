"""One ``storage`` fixture over every engine: each test of tests/storage runs once per engine.

SQLite (a file in the test's tmp dir) and PostgreSQL (a fresh database of the session's real
cluster, tests/servers.py) are the entries of :data:`ENGINES`; an engine is a parameter of the
tests, not a copy of them. Fixtures build nodes and readings through the :class:`~tswarm.storage.Storage` interface,
never SQL; a test of one engine's own mechanics (pragmas, its file) asks for that engine's fixture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tswarm.storage import Storage
from tswarm.storage.sqlite import SqliteStorage


def _sqlite(request: pytest.FixtureRequest) -> Callable[[], Storage]:
    path: Path = request.getfixturevalue("tmp_path") / "data"
    return lambda: SqliteStorage.open(path)


def _postgres(request: pytest.FixtureRequest) -> Callable[[], Storage]:
    from tswarm.storage.postgres import PostgresStorage

    url: str = request.getfixturevalue("postgres_url")  # starts the session's cluster on first use
    return lambda: PostgresStorage(url)


# engine -> (the test's request -> a function that opens the test's storage, again and again)
ENGINES: dict[str, Callable[[pytest.FixtureRequest], Callable[[], Storage]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(ENGINES))
def open_engine(request) -> Callable[[], Storage]:
    """``open_engine()`` -> a new connection to the same storage (as another process would open it)."""
    opened: list[Storage] = []
    open_storage = ENGINES[request.param](request)

    def open_() -> Storage:
        opened.append(open_storage())
        return opened[-1]

    yield open_
    for storage in opened:
        storage.close()


@pytest.fixture
def storage(open_engine) -> Storage:
    return open_engine()


@pytest.fixture
def sqlite_storage(tmp_path) -> SqliteStorage:
    with SqliteStorage.open(tmp_path / "data") as storage:
        yield storage


def add_nodes(storage: Storage, *names: str, password_hash: str = "h") -> list[int]:
    """Register ``names``; their ids."""
    for name in names:
        storage.add_node(name, password_hash)
    return [storage.node_auth(name).id for name in names]
