"""The interface names every operation once; an engine implements exactly those."""
import inspect

from tswarm.storage import Storage, Writer
from tswarm.storage.sqlite import SqliteStorage, SqliteWriter


def _public(cls) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_every_operation_is_documented_once_on_the_interface():
    for cls in (Storage, Writer):
        undocumented = [name for name in cls.__abstractmethods__ if not inspect.getdoc(getattr(cls, name))]
        assert undocumented == [], cls


def test_the_sqlite_engine_adds_no_operation_the_interface_does_not_name():
    assert _public(SqliteStorage) - _public(Storage) == {"open"}  # its own constructor from a data dir
    assert _public(SqliteWriter) - _public(Writer) == set()
    assert not SqliteStorage.__abstractmethods__ and not SqliteWriter.__abstractmethods__
