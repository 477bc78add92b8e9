"""The SQLite journal's file: pragmas, the schema version, and upgrades of older journals.

The old journals are built from tests/storage/data/journal-v0.sql, a dump of a journal made by tswarm
before schema versions, journal-v1.sql, one of version 1 (before over-the-air updates), and
journal-v2.sql, one of version 2 (before telemetry and kept readings); everything is checked
through the storage interface.
"""
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from tswarm.cli import cli
from tswarm.storage import DB_FILENAME, BundleFile, Duplicate, FirmwareState, ReadingExtra, StorageUnusable, open_storage
from tswarm.storage.sqlite import SCHEMA_VERSION, SqliteStorage
from tswarm.storage.sqlite.schema import connect, upgrade

V0_DUMP = Path(__file__).parent / "data" / "journal-v0.sql"
V1_DUMP = Path(__file__).parent / "data" / "journal-v1.sql"
V2_DUMP = Path(__file__).parent / "data" / "journal-v2.sql"


@pytest.fixture
def v0_dir(tmp_path) -> Path:
    """A data dir holding the journal of journal-v0.sql (user_version 0, today's tables, rows)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    conn.executescript(V0_DUMP.read_text())
    conn.close()
    return data_dir


@pytest.fixture
def v1_dir(tmp_path) -> Path:
    """A data dir holding the journal of journal-v1.sql (user_version 1: no firmware columns or tables)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    conn.executescript(V1_DUMP.read_text())
    conn.close()
    return data_dir


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_pragmas_make_commits_durable(sqlite_storage):
    assert sqlite_storage.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sqlite_storage.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_journal_file_lives_in_the_data_dir(data_dir):
    with SqliteStorage.open(data_dir) as storage:
        assert storage.path == data_dir / DB_FILENAME and storage.path.exists()


def test_a_new_journal_starts_at_the_current_version(data_dir):
    open_storage(data_dir).close()
    assert SCHEMA_VERSION >= 1 and _version(data_dir / DB_FILENAME) == SCHEMA_VERSION


def test_a_journal_made_before_schema_versions_opens_and_keeps_every_node_and_reading(v0_dir):
    assert _version(v0_dir / DB_FILENAME) == 0
    with open_storage(v0_dir) as storage:
        assert [(n.name, n.created_at is not None, n.halted, n.interval_s, n.last_ts) for n in storage.list_nodes()] == [
            ("attic", True, True, 300, 1700000200000000001),
            ("porch", True, False, 900, 1700000200000000000),
            ("quiet", False, False, 300, None),
        ]
        assert not storage.is_registered("gone") and storage.ever_registered("gone")
        assert storage.node_auth("porch").password_hash == "scrypt$1024$8$1$c2FsdA==$porch"
        assert storage.node_auth("porch").halted and storage.halted_all()  # halt_all was on
        assert [r for batch in storage.iter_readings() for r in batch] == [
            (1700000100000000000, "porch", 21.5, 40.0),
            (1700000100000000001, "attic", 18.25, 55.5),
            (1700000100000000002, "gone", 9.0, 90.0),
            (1700000200000000000, "porch", 22.0, 41.0),
            (1700000200000000001, "attic", 18.5, 56.0),
        ]
        assert storage.forward_cursor() == 3 and storage.count_outbox(3) == 2
        assert storage.pruned_before() == 1700000050000000000
        [(reading, reason, rejected_at)] = storage.rejected_readings()
        assert (reading.id, reading.node, reason, rejected_at) == (2, "attic", "HTTP 400: field type conflict", 1700000400000000000)
        storage.add_node("new", "h")  # and it takes new ones
        storage.add_readings([("new", 1700000300000000000, 1.0, 2.0)])
    assert _version(v0_dir / DB_FILENAME) == SCHEMA_VERSION


async def test_the_writer_continues_an_upgraded_journal_after_its_newest_timestamp(v0_dir):
    with open_storage(v0_dir) as storage:
        writer = storage.writer()
        await writer.start()
        ts = await writer.append(storage.node_auth("porch").id, 1.0, 1.0)
        await writer.close()
        assert ts > 1700000200000000001 and storage.last_reading_id() == 6


def test_opening_a_current_journal_again_writes_nothing(v0_dir):
    open_storage(v0_dir).close()
    conn = connect(v0_dir / DB_FILENAME)
    statements = []
    conn.set_trace_callback(statements.append)
    upgrade(conn, v0_dir / DB_FILENAME)
    conn.close()
    assert statements == ["PRAGMA user_version"]
    with open_storage(v0_dir) as storage:
        assert storage.count_readings() == 5 and len(storage.list_nodes()) == 3


def test_two_processes_upgrading_at_once_both_open_it(tmp_path):
    """Four at once, on 25 fresh copies of an old journal (not in WAL yet): switching it to WAL answered
    "database is locked" at once to about one such round in twenty, until that was waited for too."""
    for round_ in range(25):
        data_dir = tmp_path / f"data-{round_}"
        data_dir.mkdir()
        conn = sqlite3.connect(data_dir / DB_FILENAME)
        conn.executescript(V0_DUMP.read_text())
        conn.close()
        errors = []

        def open_one():
            try:
                SqliteStorage.open(data_dir).close()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and _version(data_dir / DB_FILENAME) == SCHEMA_VERSION, round_
        with open_storage(data_dir) as storage:
            assert storage.count_readings() == 5


def test_a_journal_newer_than_this_tswarm_is_refused_in_one_line(v0_dir):
    conn = sqlite3.connect(v0_dir / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageUnusable) as refused:
        open_storage(v0_dir)
    message = str(refused.value)
    assert message == (
        f"journal {v0_dir / DB_FILENAME} has schema version {SCHEMA_VERSION + 1}, newer than this tswarm"
        f" knows ({SCHEMA_VERSION}); upgrade tswarm"
    )
    result = CliRunner().invoke(cli, ["node", "list", "--data-dir", str(v0_dir)])
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"
    assert _version(v0_dir / DB_FILENAME) == SCHEMA_VERSION + 1  # left as it was


def test_a_version_1_journal_gains_the_firmware_room_and_keeps_every_node_and_reading(v1_dir):
    assert _version(v1_dir / DB_FILENAME) == 1
    with open_storage(v1_dir) as storage:
        assert [(n.name, n.created_at, n.halted, n.interval_s, n.last_ts, n.firmware) for n in storage.list_nodes()] == [
            ("attic", None, True, 300, 1700000200000000000, FirmwareState()),
            ("porch", 1700000001000000000, False, 900, 1700000100000000000, FirmwareState()),
        ]
        assert storage.node_auth("porch").password_hash == "scrypt$1024$8$1$c2FsdA==$porch"
        assert storage.node_auth("porch").interval_s == 900 and storage.node_auth("porch").fw_running is None
        assert not storage.is_registered("gone") and storage.ever_registered("gone")
        assert storage.count_readings() == 3 and storage.last_reading_id() == 3
        storage.add_bundle("v1", [("node.py", b"x")], 5)  # and the new room works
        assert storage.stage_bundle("v1", None, 6) == ["attic", "porch"]
        storage.report_firmware("porch", "v1", None, 7)
        assert storage.firmware_state("porch") == FirmwareState("v1", 7, "v1", 6, 7)
        assert storage.bundle_files("v1") == [BundleFile("node.py", 1, "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")]
    assert _version(v1_dir / DB_FILENAME) == SCHEMA_VERSION >= 2
    with open_storage(v1_dir) as storage:  # opened again: nothing to do, everything kept
        assert storage.firmware_state("porch").updated_at == 7 and storage.count_readings() == 3


@pytest.fixture
def v2_dir(tmp_path) -> Path:
    """A data dir holding the journal of journal-v2.sql (user_version 2: no telemetry columns, no key index)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    conn.executescript(V2_DUMP.read_text())
    conn.close()
    return data_dir


async def test_a_version_2_journal_gains_the_telemetry_and_keeps_every_node_reading_and_bundle(v2_dir):
    assert _version(v2_dir / DB_FILENAME) == 2
    with open_storage(v2_dir) as storage:
        assert [(n.name, n.created_at, n.halted, n.interval_s, n.last_ts, n.firmware.running, n.last_vbat)
                for n in storage.list_nodes()] == [
            ("attic", None, True, 300, 1700000200000000000, None, None),
            ("porch", 1700000001000000000, False, 900, 1700000200000000001, "v1", None),
        ]
        assert [r for batch in storage.iter_readings(with_extra=True, with_id=True) for r in batch] == [
            (1700000100000000000, "porch", 21.5, 40.0, None, None, None, None, 1),
            (1700000100000000001, "gone", 9.0, 90.0, None, None, None, None, 2),
            (1700000200000000000, "attic", 18.5, 56.0, None, None, None, None, 3),
            (1700000200000000001, "porch", 22.0, 41.0, None, None, None, None, 4),
        ]
        assert storage.forward_cursor() == 2 and storage.count_outbox(2) == 2
        assert storage.bundle_file("v1", "node.py") == b"x" and storage.firmware_state("porch").staged == "v1"
        writer = storage.writer()  # and the new columns and the key work
        await writer.start()
        porch = storage.node_auth("porch").id
        first = await writer.append(porch, 1.0, 2.0, extra=ReadingExtra(3.3, -70, 900, 0), key=("b", 1))
        again = await writer.append(porch, 1.0, 2.0, key=("b", 1))
        await writer.close()
        assert first > 1700000200000000001 and isinstance(again, Duplicate) and again == first
        assert storage.last_reading_id() == 5 and storage.list_nodes()[1].last_rssi == -70
    assert _version(v2_dir / DB_FILENAME) == SCHEMA_VERSION >= 3
    conn = sqlite3.connect(v2_dir / DB_FILENAME)
    try:
        assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'readings_node_key'").fetchone() == (
            "CREATE UNIQUE INDEX readings_node_key ON readings (node_id, boot, seq) WHERE seq IS NOT NULL",
        )
    finally:
        conn.close()


def test_several_processes_upgrading_a_version_2_journal_at_once_all_open_it(tmp_path):
    for round_ in range(5):
        data_dir = tmp_path / f"data-{round_}"
        data_dir.mkdir()
        conn = sqlite3.connect(data_dir / DB_FILENAME)
        conn.executescript(V2_DUMP.read_text())
        conn.close()
        errors = []

        def open_one():
            try:
                SqliteStorage.open(data_dir).close()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and _version(data_dir / DB_FILENAME) == SCHEMA_VERSION, round_
        with open_storage(data_dir) as storage:
            assert storage.count_readings() == 4
