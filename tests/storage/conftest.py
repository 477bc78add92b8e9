"""One ``storage`` fixture over every engine: each test of tests/storage runs once per engine.

SQLite is the only engine today; a second one is one more entry in :data:`ENGINES`, not a copy of
the tests. Fixtures build nodes and readings through the :class:`~tswarm.storage.Storage` interface,
never SQL; a test of one engine's own mechanics (pragmas, its file) asks for that engine's fixture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tswarm.storage import Storage
from tswarm.storage.sqlite import SqliteStorage

ENGINES: dict[str, Callable[[Path], Storage]] = {
    "sqlite": lambda tmp_path: SqliteStorage.open(tmp_path / "data"),
}


@pytest.fixture(params=sorted(ENGINES))
def open_engine(request, tmp_path) -> Callable[[], Storage]:
    """``open_engine()`` -> a new connection to the same storage (as another process would open it)."""
    opened: list[Storage] = []

    def open_() -> Storage:
        opened.append(ENGINES[request.param](tmp_path))
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
