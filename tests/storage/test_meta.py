"""Meta: small named values, and the one upsert (with its never-backwards flag)."""
from tswarm.storage.sqlite.meta import get_meta, put_meta


def test_set_read_replace_and_delete(storage):
    assert storage.meta("k") is None
    storage.set_meta("k", "one")
    storage.set_meta("k", "two")
    assert storage.meta("k") == "two"
    storage.set_meta("k", None)
    assert storage.meta("k") is None
    storage.set_meta("k", None)  # deleting what is not there: nothing


def test_meta_is_shared_by_every_connection(storage, open_engine):
    storage.set_meta("forward_last_error", '{"at": 1, "message": "down"}')
    assert open_engine().meta("forward_last_error") == '{"at": 1, "message": "down"}'


def test_never_backwards_keeps_the_larger_integer(sqlite_storage):
    conn = sqlite_storage.conn
    put_meta(conn, "cursor", "10", never_backwards=True)  # first time: stored
    put_meta(conn, "cursor", "9", never_backwards=True)
    assert get_meta(conn, "cursor") == "10"
    put_meta(conn, "cursor", "100", never_backwards=True)  # compared as numbers, not text
    assert get_meta(conn, "cursor") == "100"
    put_meta(conn, "cursor", "5")  # without the flag: as given
    assert get_meta(conn, "cursor") == "5"
