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


def test_setdefault_keeps_the_first_value_and_of_many_at_once_one_wins(storage, open_engine):
    from concurrent.futures import ThreadPoolExecutor

    assert storage.setdefault_meta("first", "one") == "one"
    assert storage.setdefault_meta("first", "two") == "one" and storage.meta("first") == "one"
    others = [open_engine() for _ in range(4)]  # as four instances starting at once
    with ThreadPoolExecutor(len(others)) as pool:
        got = list(pool.map(lambda i: others[i].setdefault_meta("token", f"made-by-{i}"), range(len(others))))
    assert len(set(got)) == 1 and got[0] in {f"made-by-{i}" for i in range(len(others))}
    assert storage.meta("token") == got[0]
