"""Firmware: bundles kept by version, staging them for nodes, what nodes report, and the state the
registry shows (``node_auth``, ``list_nodes``, ``firmware_state``); on every engine.

Versions here are any strings (the storage does not check them: service/bundles.py makes and checks
them). Whether a report wrote anything is asked of the engine itself (:func:`writes`): SQLite's count
of rows this connection changed, PostgreSQL's row version (``xmin``) of the node's row.
"""
from __future__ import annotations

import hashlib

import pytest

from tswarm.storage import BundleFile, FirmwareState, NodeNotFound, Storage, StorageError

from .conftest import add_nodes

NODE_PY = b"print('node')\n" * 10
OTA_PY = b"# ota\n"
FILES = [("ota.py", OTA_PY), ("node.py", NODE_PY)]


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def fw(storage) -> Storage:
    """Nodes a, b, c (registered), gone (removed); bundles v1 (FILES) and v2 (one file) kept."""
    add_nodes(storage, "a", "b", "c", "gone")
    storage.remove_node("gone")
    storage.add_bundle("v1", FILES, 10)
    storage.add_bundle("v2", [("node.py", b"v2")], 11)
    return storage


def writes(storage: Storage, name: str):
    """What changes whenever node ``name``'s row is written (even with the same values)."""
    if storage.engine == "sqlite":
        return storage.conn.total_changes
    return storage._one("SELECT xmin::text FROM nodes WHERE name = %s", (name,))[0]


# -- bundles ------------------------------------------------------------------------------------------


def test_a_bundle_lists_its_files_by_name_with_size_and_sha256(fw):
    assert fw.bundle_files("v1") == [BundleFile("node.py", len(NODE_PY), _sha(NODE_PY)), BundleFile("ota.py", 6, _sha(OTA_PY))]
    assert fw.bundle_file("v1", "node.py") == NODE_PY and type(fw.bundle_file("v1", "node.py")) is bytes
    assert fw.bundle_file("v1", "ota.py") == OTA_PY
    assert fw.bundle_files("v2") == [BundleFile("node.py", 2, _sha(b"v2"))]


def test_an_unknown_bundle_or_file_is_none(fw):
    assert fw.bundle_files("v9") is None
    assert fw.bundle_file("v9", "node.py") is None
    assert fw.bundle_file("v2", "ota.py") is None


def test_a_version_kept_already_is_left_as_it_is(fw):
    fw.add_bundle("v1", [("other.py", b"x")], 99)
    assert [f.name for f in fw.bundle_files("v1")] == ["node.py", "ota.py"]
    assert fw.bundle_file("v1", "other.py") is None


def test_a_bundle_without_files_is_kept_and_empty(fw):
    fw.add_bundle("empty", [], 12)
    assert fw.bundle_files("empty") == []


def test_binary_content_comes_back_byte_for_byte(storage):
    content = bytes(range(256)) * 300  # NUL bytes, every byte value, 75 KB
    storage.add_bundle("bin", [("blob.py", content)], 1)
    assert storage.bundle_file("bin", "blob.py") == content
    assert storage.bundle_files("bin") == [BundleFile("blob.py", len(content), _sha(content))]


def test_a_bundle_naming_one_file_twice_is_refused_and_not_kept(storage):
    with pytest.raises(StorageError):
        storage.add_bundle("twice", [("node.py", b"1"), ("node.py", b"2")], 1)
    assert storage.bundle_files("twice") is None


# -- staging -------------------------------------------------------------------------------------------


def test_staging_for_named_nodes_sets_their_staged_version_only(fw):
    assert fw.stage_bundle("v1", ["c", "a", "a"], 100) == ["a", "c"]
    assert fw.firmware_state("a") == FirmwareState(staged="v1", staged_at=100)
    assert fw.firmware_state("c") == FirmwareState(staged="v1", staged_at=100)
    assert fw.firmware_state("b") == FirmwareState()
    assert fw.node_auth("a").fw_staged == "v1" and fw.node_auth("b").fw_staged is None


def test_staging_for_every_node_takes_the_registered_ones(fw):
    assert fw.stage_bundle("v2", None, 100) == ["a", "b", "c"]
    assert [(n.name, n.firmware.staged) for n in fw.list_nodes()] == [("a", "v2"), ("b", "v2"), ("c", "v2")]


def test_staging_no_node_stages_nothing(fw):
    assert fw.stage_bundle("v1", [], 100) == []
    assert all(n.firmware == FirmwareState() for n in fw.list_nodes())


@pytest.mark.parametrize("names", [["a", "never"], ["a", "gone"]])
def test_a_name_not_registered_stages_nothing(fw, names):
    fw.stage_bundle("v2", ["a"], 50)
    with pytest.raises(NodeNotFound, match=names[1]):
        fw.stage_bundle("v1", names, 100)
    assert fw.firmware_state("a") == FirmwareState(staged="v2", staged_at=50)


def test_a_version_not_kept_stages_nothing(fw):
    with pytest.raises(StorageError, match="v9") as refused:
        fw.stage_bundle("v9", ["a"], 100)
    assert not isinstance(refused.value, NodeNotFound)
    assert fw.firmware_state("a") == FirmwareState()


def test_staging_replaces_the_pending_version(fw):
    fw.stage_bundle("v1", ["a"], 100)
    fw.stage_bundle("v2", ["a"], 200)
    assert fw.firmware_state("a") == FirmwareState(staged="v2", staged_at=200)


def test_staging_none_unstages(fw):
    fw.stage_bundle("v1", ["a", "b"], 100)
    fw.report_firmware("a", "v1", None, 150)
    assert fw.stage_bundle(None, ["a"], 200) == ["a"]
    assert fw.firmware_state("a") == FirmwareState(running="v1", reported_at=150)  # what it runs stays
    assert fw.firmware_state("b").staged == "v1"
    assert fw.stage_bundle(None, None, 300) == ["a", "b", "c"]
    assert fw.firmware_state("b") == FirmwareState()
    assert fw.node_auth("a").fw_staged is None


# -- what nodes report -------------------------------------------------------------------------------


def test_a_report_sets_what_it_runs_once_per_version(fw):
    fw.report_firmware("a", "old", None, 100)
    assert fw.firmware_state("a") == FirmwareState(running="old", reported_at=100)
    fw.report_firmware("a", "old", None, 200)  # the same: reported_at is when it first said so
    assert fw.firmware_state("a") == FirmwareState(running="old", reported_at=100)
    fw.report_firmware("a", "newer", None, 300)
    assert fw.firmware_state("a") == FirmwareState(running="newer", reported_at=300)
    assert fw.node_auth("a").fw_running == "newer"


def test_running_the_staged_version_marks_it_updated_once(fw):
    fw.report_firmware("a", "old", None, 100)
    fw.stage_bundle("v1", ["a"], 200)
    fw.report_firmware("a", "v1", None, 300)
    assert fw.firmware_state("a") == FirmwareState(
        running="v1", reported_at=300, staged="v1", staged_at=200, updated_at=300
    )
    fw.report_firmware("a", "v1", None, 400)
    fw.report_firmware("a", "other", None, 500)  # flashed by hand meanwhile: updated_at stays
    assert fw.firmware_state("a") == FirmwareState(
        running="other", reported_at=500, staged="v1", staged_at=200, updated_at=300
    )


def test_a_rollback_is_kept_until_staged_again(fw):
    fw.report_firmware("a", "old", None, 100)
    fw.stage_bundle("v1", ["a"], 200)
    fw.report_firmware("a", "old", "v1", 300)
    assert fw.firmware_state("a") == FirmwareState(
        running="old", reported_at=100, staged="v1", staged_at=200, rolled_back="v1", rolled_back_at=300
    )
    auth = fw.node_auth("a")
    assert (auth.fw_running, auth.fw_staged, auth.fw_rolled_back) == ("old", "v1", "v1")
    fw.report_firmware("a", "old", "v1", 400)  # said again (no 202 reached it): the first time stays
    fw.report_firmware("a", "old", None, 500)  # the header no longer sent: the mark stays
    assert fw.firmware_state("a").rolled_back_at == 300 and fw.firmware_state("a").rolled_back == "v1"
    fw.stage_bundle("v1", ["a"], 600)  # staged again: offered again
    assert fw.firmware_state("a") == FirmwareState(running="old", reported_at=100, staged="v1", staged_at=600)


def test_a_rollback_from_another_version_replaces_the_mark(fw):
    fw.report_firmware("a", "old", "v1", 100)
    fw.report_firmware("a", "old", "v2", 200)
    assert (fw.firmware_state("a").rolled_back, fw.firmware_state("a").rolled_back_at) == ("v2", 200)


def test_staging_again_clears_updated(fw):
    fw.stage_bundle("v1", ["a"], 100)
    fw.report_firmware("a", "v1", None, 200)
    fw.stage_bundle("v1", ["a"], 300)
    assert fw.firmware_state("a") == FirmwareState(running="v1", reported_at=200, staged="v1", staged_at=300)


def test_a_report_that_changes_nothing_writes_nothing(fw):
    fw.stage_bundle("v1", ["a"], 100)
    fw.report_firmware("a", "v1", "v0", 200)
    before = writes(fw, "a")
    fw.report_firmware("a", "v1", "v0", 300)
    fw.report_firmware("a", "v1", None, 400)
    assert writes(fw, "a") == before
    fw.report_firmware("a", "v2", None, 500)
    assert writes(fw, "a") != before


def test_a_report_of_a_node_not_registered_does_nothing(fw):
    for name in ("never", "gone"):
        fw.report_firmware(name, "v1", "v0", 100)
        assert fw.firmware_state(name) is None
    fw.add_node("gone", "h")
    assert fw.firmware_state("gone") == FirmwareState()


# -- the registry shows it ---------------------------------------------------------------------------


def test_node_auth_has_the_interval_and_the_firmware(fw):
    fw.set_interval("b", 900)
    fw.stage_bundle("v1", ["b"], 100)
    fw.report_firmware("b", "old", "v0", 200)
    auth = fw.node_auth("b")
    assert (auth.interval_s, auth.fw_running, auth.fw_staged, auth.fw_rolled_back) == (900, "old", "v1", "v0")
    auth = fw.node_auth("a")
    assert (auth.interval_s, auth.fw_running, auth.fw_staged, auth.fw_rolled_back) == (300, None, None, None)


def test_list_nodes_has_each_nodes_firmware(fw):
    fw.stage_bundle("v1", ["a"], 100)
    fw.report_firmware("a", "v1", None, 200)
    fw.report_firmware("b", "old", None, 300)
    assert [(n.name, n.firmware) for n in fw.list_nodes()] == [
        ("a", FirmwareState(running="v1", reported_at=200, staged="v1", staged_at=100, updated_at=200)),
        ("b", FirmwareState(running="old", reported_at=300)),
        ("c", FirmwareState()),
    ]
    assert [fw.firmware_state(n) for n in ("a", "b", "c")] == [n.firmware for n in fw.list_nodes()]


def test_a_node_removed_and_added_again_starts_afresh(fw):
    fw.stage_bundle("v1", ["a"], 100)
    fw.report_firmware("a", "old", "v1", 200)
    fw.remove_node("a")
    assert fw.firmware_state("a") is None
    fw.add_node("a", "h2")
    assert fw.firmware_state("a") == FirmwareState()
    auth = fw.node_auth("a")
    assert (auth.fw_running, auth.fw_staged, auth.fw_rolled_back) == (None, None, None)
    assert fw.bundle_files("v1") is not None  # the bundles stay


# -- moving house -------------------------------------------------------------------------------------


def _moved(storage: Storage) -> tuple:
    """What a dump of ``storage`` holds but readings: counts, every node row, the bundles and their files."""
    with storage.dump() as dump:
        return dump.counts, dump.nodes, list(dump.bundles), list(dump.bundle_files)


def _fill(fw: Storage) -> None:
    fw.stage_bundle("v1", ["a", "b"], 100)
    fw.report_firmware("a", "v1", None, 200)
    fw.report_firmware("b", "old", "v1", 300)
    fw.report_firmware("c", "old", None, 400)
    fw.add_readings([("a", 500, 1.0, 2.0)])


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_a_dump_carries_the_bundles_and_every_nodes_firmware_into_either_engine(fw, target, postgres, tmp_path):
    from tswarm.storage.postgres import PostgresStorage
    from tswarm.storage.sqlite import SqliteStorage

    _fill(fw)
    source = _moved(fw)
    counts, nodes, bundles, files = source
    assert (counts.bundles, counts.bundle_files) == (2, 3)
    assert bundles == [("v1", 10), ("v2", 11)]
    assert files == [("v1", "node.py", _sha(NODE_PY), NODE_PY), ("v1", "ota.py", _sha(OTA_PY), OTA_PY),
                     ("v2", "node.py", _sha(b"v2"), b"v2")]
    assert [n[8:15] for n in nodes] == [  # the fw_* columns, by id: a, b, c, gone
        ("v1", 200, "v1", 100, 200, None, None), ("old", 300, "v1", 100, None, "v1", 300),
        ("old", 400, None, None, None, None, None), (None,) * 7,
    ]
    assert [n[15:] for n in nodes] == [(False,)] * 4  # and the display right after them (none has it)
    engine, place = (SqliteStorage, tmp_path / "copy") if target == "sqlite" else (PostgresStorage, postgres.new_database())
    with fw.dump() as dump:
        assert engine.load(place, dump) == counts
    with (SqliteStorage.open(place) if target == "sqlite" else PostgresStorage(place)) as copy:
        assert _moved(copy) == source
        assert [(n.name, n.firmware) for n in copy.list_nodes()] == [(n.name, n.firmware) for n in fw.list_nodes()]
        assert copy.bundle_files("v1") == fw.bundle_files("v1") and copy.bundle_file("v2", "node.py") == b"v2"
        assert copy.node_auth("b").fw_rolled_back == "v1"


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_a_copy_missing_a_bundle_is_not_kept(fw, target, postgres, tmp_path):
    import dataclasses

    from tswarm.storage import StorageUnusable
    from tswarm.storage.postgres import PostgresStorage
    from tswarm.storage.sqlite import SqliteStorage

    engine, place = (SqliteStorage, tmp_path / "copy") if target == "sqlite" else (PostgresStorage, postgres.new_database())
    with fw.dump() as dump:
        lost = dataclasses.replace(dump, bundles=dump.bundles[:1], bundle_files=dump.bundle_files[:2])
        with pytest.raises(StorageUnusable, match=r"bundles 1 instead of 2, bundle_files 2 instead of 3"):
            engine.load(place, lost)
    if target == "sqlite":
        assert not place.exists()
    else:
        import psycopg

        with psycopg.connect(place) as conn:  # rolled back, schema included
            assert conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall() == []
