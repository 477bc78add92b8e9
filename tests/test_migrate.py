"""`tswarm migrate`: the journal moves whole into an empty PostgreSQL database (the real cluster of
tests/servers.py, a fresh database per test) and back into an empty data dir; compared field by
field through the Storage interface on both sides. A target holding a journal is refused and left as
it was; a failure midway leaves it empty; every mistake is one `Error:` line."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings, strategies as st

from tswarm.datadir import hold_data_dir
from tswarm.migrate import MigrateError, Target, migrate
from tswarm.settings import Config
from tswarm.storage import (
    AlertChange, AlertState, DB_FILENAME, FORWARD_LAST_ERROR, READ_TOKEN, Duplicate, ReadingExtra, Storage, StorageUnusable, open_storage,
)
from tswarm.tokens import kept_read_token

from .conftest import NS, nodes_table, register, test_config
from .test_protocol import body, hdr

FUTURE = 4_000_000_000 * NS  # readings stamped after any clock of today: the next one must still come after
PW = "secret-pw"


BUNDLES = ("v1", "v2", "cfg")  # the versions fill and the hypothesis test may keep


def view(s: Storage) -> dict:
    """Everything a journal holds, as the Storage interface shows it (each node's firmware state is
    in its NodeStatus)."""
    names = dict(s.node_names())
    return {
        "nodes": nodes_table(s),
        "bundles": {v: [(f, s.bundle_file(v, f.name)) for f in s.bundle_files(v) or ()] for v in BUNDLES},
        "names": names,
        "registered": {n: s.is_registered(n) for n in names.values()},
        "halted_all": s.halted_all(),
        "readings": [r for rows in s.iter_readings(with_id=True, with_extra=True) for r in rows],
        "outbox": [tuple(r) for r in s.outbox_rows(0, 10**6, with_extra=True)],
        "telemetry": [(n.name, n.last_vbat, n.last_rssi, n.last_awake_ms) for n in s.list_nodes()],
        "last_reading_id": s.last_reading_id(),
        "cursor": s.forward_cursor(),
        "last_error": s.meta(FORWARD_LAST_ERROR),
        "rejected": s.rejected_readings(limit=10**6),
        "pruned_before": s.pruned_before(),
    }


def fill(journal: Storage) -> None:
    """Nodes in every state, readings (the newest in the future), some pruned, some forwarded, one
    rejected, the forwarder's last error, halt-all on."""
    register(journal, "attic", PW, created=True)
    register(journal, "cellar", PW)  # registered, never created: a PUT is 405
    register(journal, "kitchen", PW, created=True)
    register(journal, "garage", PW, created=True)
    journal.set_halt("attic", True)
    journal.set_interval("kitchen", 600)
    journal.add_bundle("v1", [("node.py", b"print('v1')\n"), ("ota.py", bytes(range(256)))], 1 * NS)
    journal.add_bundle("cfg", [("config-patch.json", b'{"netconf":{"sleep":600}}')], 2 * NS)
    journal.stage_bundle("v1", ["attic", "kitchen", "garage"], 3 * NS)
    journal.report_firmware("attic", "v1", None, 4 * NS)  # updated
    journal.report_firmware("kitchen", "v0", "v1", 5 * NS)  # rolled back
    journal.stage_bundle("cfg", ["cellar"], 6 * NS)  # pending
    journal.add_readings([("garage", FUTURE - 10 * NS, 1.0, 10.0)])
    journal.remove_node("garage")  # removed: its reading stays, its id keeps its name
    journal.add_readings([
        ("kitchen", FUTURE - 5 * NS, 21.5, 40.0), ("attic", FUTURE - 4 * NS, -3.25, 80.0),
        ("kitchen", FUTURE - 3 * NS, 21.75, 41.0, ReadingExtra(vbat=3.3)), ("attic", FUTURE, 5.0, 70.5, ReadingExtra(4.1, -55, 2000, 3)),
    ])
    journal.prune_readings(FUTURE - 4 * NS, up_to_id=2)  # the garage's and the kitchen's first go
    first = journal.outbox_readings(0, 10)[0]
    journal.mark_forwarded(4, rejected=[(first, "field type conflict")])
    journal.set_meta(FORWARD_LAST_ERROR, json.dumps({"at": 5, "message": "InfluxDB answered 503"}))
    journal.set_halt(None, True)


@pytest.fixture
def full(journal):
    fill(journal)
    return journal


async def _append(journal: Storage, node_id: int) -> int:
    """One reading through the service's writer; its timestamp."""
    writer = journal.writer()
    await writer.start()
    try:
        return await writer.append(node_id, 20.0, 50.0)
    finally:
        await writer.close()


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


# -- the move --------------------------------------------------------------------------------------


def test_a_journal_moves_whole_into_an_empty_database(full, run, postgres, postgres_url):
    before = view(full)
    assert before["pruned_before"] and before["cursor"] == 4 and before["rejected"] and before["halted_all"]
    assert [n.firmware.staged for n, _ in before["nodes"]] == ["v1", "cfg", "v1"] and before["bundles"]["cfg"]
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 0, result.output
    assert postgres.PASSWORD not in result.output
    with open_storage("", postgres_url, existing=True) as copy:
        assert view(copy) == before
    assert result.stdout.splitlines()[0] == (
        f"copied {full.path} to {postgres_url.replace(postgres.PASSWORD, '***')}, and checked it:"
    )
    assert "  nodes      4 (3 registered, 1 halted; halt-all on); passwords as they were" in result.stdout
    assert "  readings   3, ids 3 to 5, the newest at 2096-10-02T07:06:40.000000000Z" in result.stdout
    assert "  forwarded  up to reading 4 (the forward cursor); the last forward error too" in result.stdout
    assert "  firmware   2 bundle(s), 3 file(s); what each node runs and has staged" in result.stdout
    assert result.stderr == ""  # no terminal: no progress bar
    assert view(full) == before  # the source is untouched


async def test_after_the_move_nodes_authenticate_and_the_next_reading_comes_after_the_copied_ones(
    full, run, postgres_url, make_client,
):
    full.set_halt(None, False)
    assert run("migrate", "--to", postgres_url).exit_code == 0
    client = await make_client(database_url=postgres_url)
    resp = await client.put("/api/nodes/kitchen", data=body(name="kitchen"), headers=hdr("kitchen", PW))
    assert resp.status == 202  # the password hash came as it was: the node needs no new one
    assert (await client.put("/api/nodes/kitchen", data=body(name="kitchen"), headers=hdr("kitchen", "nope"))).status == 401
    assert (await client.put("/api/nodes/attic", data=body(name="attic"), headers=hdr("attic", PW))).status == 423
    assert (await client.put("/api/nodes/cellar", data=body(name="cellar"), headers=hdr("cellar", PW))).status == 405
    with open_storage("", postgres_url, existing=True) as copy:
        newest = [r for rows in copy.iter_readings(with_id=True) for r in rows][-2:]
        assert [(node, reading_id) for _, node, _, _, reading_id in newest] == [("kitchen", 6), ("attic", 7)]
        assert FUTURE < newest[0][0] < newest[1][0]  # stamped after the newest copied one, still increasing
        copy.add_node("shed", "h")  # node ids go on after the copied ones too
        assert copy.node_auth("shed").id == 5


async def test_the_telemetry_and_the_keys_move_too(journal, run, postgres_url):
    """A reading sent again after the move (its 202 lost just before it) is still a duplicate there."""
    register(journal, "kitchen", PW, created=True)
    node_id = journal.node_auth("kitchen").id
    writer = journal.writer()
    await writer.start()
    first = await writer.append(node_id, 20.0, 50.0, extra=ReadingExtra(3.6, -70, 1500, 1), key=("k1", 41), age_s=60)
    await writer.close()
    before = view(journal)
    assert before["readings"] == [(first, "kitchen", 20.0, 50.0, 3.6, -70, 1500, 1, 1)]
    assert run("migrate", "--to", postgres_url).exit_code == 0
    with open_storage("", postgres_url, existing=True) as copy:
        assert view(copy) == before
        writer = copy.writer()
        await writer.start()
        again = await writer.append(node_id, 20.0, 50.0, key=("k1", 41))
        await writer.close()
        assert isinstance(again, Duplicate) and again == first and copy.count_readings() == 1


def test_the_display_right_moves_there_and_back(journal, run, postgres_url, tmp_path, monkeypatch):
    """A master node (the display right) still reads the swarm after a move, both ways; the others still do not."""
    register(journal, "master", PW, created=True)
    register(journal, "kitchen", PW, created=True)
    journal.set_display("master", True)
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 0, result.output
    assert ("  nodes      2 (2 registered, 0 halted; halt-all off); passwords as they were;"
            " 1 may read the swarm (display right)") in result.stdout
    with open_storage("", postgres_url, existing=True) as copy:
        assert [(n.name, n.display) for n in copy.list_nodes()] == [("kitchen", False), ("master", True)]
        assert copy.node_auth("master").display is True
        copy.set_display("kitchen", True)  # changed there: the way back carries that
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    back = tmp_path / "back"
    assert run("migrate", "--to", str(back)).exit_code == 0
    with open_storage(back) as copy:
        assert [(n.name, n.display) for n in copy.list_nodes()] == [("kitchen", True), ("master", True)]


def test_the_way_back_into_an_empty_data_dir(full, run, postgres_url, tmp_path, monkeypatch):
    before = view(full)
    assert run("migrate", "--to", postgres_url).exit_code == 0
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    back = tmp_path / "back"
    result = run("migrate", "--to", str(back))
    assert result.exit_code == 0, result.output
    assert f"to {back / DB_FILENAME}, and checked it:" in result.stdout
    assert sorted(p.name for p in back.iterdir()) == [DB_FILENAME]  # nothing else left behind
    with open_storage(back) as copy:
        assert view(copy) == before
        assert asyncio.run(_append(copy, copy.node_auth("kitchen").id)) > FUTURE  # after the newest copied one
        assert copy.last_reading_id() == before["last_reading_id"] + 1
    again = run("migrate", "--to", str(back))  # now it holds one
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: {back / DB_FILENAME} holds a journal already; tswarm migrate copies only into a data dir without"
        f" one (give another, or move that tswarm.db away); nothing was copied, {back / DB_FILENAME} is as it was\n"
    )


def test_the_read_token_moves_to_the_database_and_back(journal, run, postgres_url, data_dir, tmp_path, monkeypatch):
    """The status page's kept token (a file on SQLite, meta on PostgreSQL: service/tokens.py) goes along
    both ways, so links and cookies keep working; it is never printed."""
    register(journal, "kitchen", PW)
    (data_dir / "read-token").write_text("tok-Zz9\n")
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 0 and "tok-Zz9" not in result.output
    assert result.stdout.splitlines()[-1] == (
        "  read token the status page's, now kept in the database (meta 'read_token'): its links keep working"
    )
    config = test_config(tmp_path, database_url=postgres_url)
    assert kept_read_token(config) == ("tok-Zz9", False)  # what every instance on the database serves
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    back = tmp_path / "back"
    result = run("migrate", "--to", str(back))
    assert result.exit_code == 0 and "tok-Zz9" not in result.output
    assert (back / "read-token").read_text() == "tok-Zz9\n"
    assert (back / "read-token").stat().st_mode & 0o777 == 0o600
    assert kept_read_token(test_config(tmp_path, data_dir=back)) == ("tok-Zz9", False)


def test_no_read_token_is_made_up_by_the_move(journal, run, postgres_url, tmp_path):
    register(journal, "kitchen", PW)
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 0 and "read token" not in result.output
    with open_storage("", postgres_url, existing=True) as copy:
        assert copy.meta(READ_TOKEN) is None



def _alert_rows(url: str) -> tuple[list, list]:
    with psycopg.connect(url) as conn:
        return (conn.execute("SELECT node, health, battery, changed_at FROM alert_states ORDER BY node").fetchall(),
                conn.execute("SELECT id, node, event, body, created_at, attempts, last_error, delivered_at"
                             " FROM alerts ORDER BY id").fetchall())


def test_the_alerts_state_and_outbox_move_too(journal, run, postgres, postgres_url, tmp_path, monkeypatch):
    """A node judged late before the move is not alerted again after it, and an alert the webhook had
    not taken yet is still delivered (in order, with its id and attempts): from SQLite, and on from that
    database into another."""
    from tswarm.storage import AlertChange, AlertState

    register(journal, "porch", PW, created=True)
    register(journal, "attic", PW, created=True)
    journal.record_alert_changes([
        AlertChange("porch", None, AlertState("late", "low"), (("late", '{"id": "a1"}'), ("battery_low", '{"id": "a2"}'))),
        AlertChange("attic", None, AlertState("ok", None)),
    ], 10 * NS)
    [first] = journal.pending_alerts()  # each node's oldest undelivered one
    journal.alert_delivered(first.id, 11 * NS)
    [second] = journal.pending_alerts()
    journal.alert_failed(second.id, "HTTP 503", 12 * NS)
    assert run("migrate", "--to", postgres_url).exit_code == 0
    states, alerts = _alert_rows(postgres_url)
    assert states == [("attic", "ok", None, 10 * NS), ("porch", "late", "low", 10 * NS)]
    assert alerts == [(first.id, "porch", "late", '{"id": "a1"}', 10 * NS, 0, None, 11 * NS),
                      (second.id, "porch", "battery_low", '{"id": "a2"}', 10 * NS, 1, "HTTP 503", None)]
    with open_storage("", postgres_url, existing=True) as copy:
        assert copy.alert_states() == {"porch": AlertState("late", "low"), "attic": AlertState("ok", None)}
        assert [(p.id, p.event, p.attempts) for p in copy.pending_alerts()] == [(second.id, "battery_low", 1)]
        copy.record_alert_changes([AlertChange("attic", AlertState("ok", None), AlertState("late", None),
                                               (("late", '{"id": "a3"}'),))], 20 * NS)
        assert max(p.id for p in copy.pending_alerts()) > second.id  # the next alert comes after the copied ones
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    other = postgres.new_database()
    assert run("migrate", "--to", other).exit_code == 0
    assert _alert_rows(other) == _alert_rows(postgres_url)


def _migrate_process(data_dir: Path, url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_") and k not in ("PORT", "DATABASE_URL")}
    return subprocess.Popen([sys.executable, "-m", "tswarm", "migrate", "--to", url],
                            env={**env, "TSWARM_DATA_DIR": str(data_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _copying(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                                 " AND query LIKE 'COPY readings%%' AND pid <> pg_backend_pid()").fetchall())


def test_a_move_interrupted_or_killed_midway_leaves_the_database_empty_and_runs_again(journal, postgres, postgres_url, data_dir):
    """The real command in a process of its own, stopped while the readings stream in: Ctrl-C says in
    one line that nothing was copied and to run it again (no traceback); a kill leaves no trace either,
    and the same command then copies everything, once."""
    register(journal, "kitchen", PW, created=True)
    for start in range(0, 600_000, 100_000):
        journal.add_readings([("kitchen", ts, 20.0, 50.0) for ts in range(start + 1, start + 100_001)])
    for how in (signal.SIGINT, signal.SIGKILL):
        proc = _migrate_process(data_dir, postgres_url)
        deadline = time.monotonic() + 60
        while not _copying(postgres_url):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(how)
        out, err = proc.communicate(timeout=60)
        assert tables(postgres_url) == [], (how, out, err)
        if how == signal.SIGINT:
            assert proc.returncode == 1 and out == "" and "Traceback" not in err, err
            assert err.splitlines()[-1] == (
                f"Error: interrupted: nothing was copied, {postgres_url.replace(postgres.PASSWORD, '***')}"
                " is as it was; run the same command again")
        assert postgres.PASSWORD not in out + err
    proc = _migrate_process(data_dir, postgres_url)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "  readings   600000, ids 1 to 600000" in out
    with open_storage("", postgres_url, existing=True) as copy:
        assert copy.count_readings() == 600_000 and copy.last_reading_id() == 600_000


def test_an_interruption_after_the_commit_says_the_move_is_done_and_the_read_token_went_with_it(
        journal, postgres, postgres_url, data_dir, monkeypatch):
    """The read token goes into the copy's one transaction: stopped right after the commit (a second run
    would refuse the database), the copy is whole, token included, and the message says so."""
    import tswarm.migrate as moving

    register(journal, "kitchen", PW)
    (data_dir / "read-token").write_text("tok-Zz9\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(moving, "_check_copy", interrupted)
    with pytest.raises(MigrateError) as stopped:
        migrate(Config(data_dir=data_dir), journal, Target(postgres_url, postgres=True))
    assert str(stopped.value) == (
        f"interrupted after the copy was committed: {postgres_url.replace(postgres.PASSWORD, '***')} holds the whole"
        " journal (a second tswarm migrate refuses it); start the service on it")
    with open_storage("", postgres_url, existing=True) as copy:
        assert copy.meta(READ_TOKEN) == "tok-Zz9" and copy.node_names() == {1: "kitchen"}

# -- refusals: nothing written ----------------------------------------------------------------------


def test_a_database_holding_a_journal_is_refused_and_left_as_it_was(full, run, postgres, postgres_url):
    with open_storage("", postgres_url) as other:
        register(other, "pi-node", PW, created=True)
        other.add_readings([("pi-node", 1, 2.0, 3.0)])
        before = view(other)
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 1
    shown = postgres_url.replace(postgres.PASSWORD, "***")
    assert result.output == (
        f"Error: {shown} holds a tswarm journal already (tables alert_states, alerts, bundle_files, bundles, meta,"
        " nodes, readings, rejected, schema_version);"
        " tswarm migrate copies only into an empty database (give another, or drop those tables; if an earlier"
        " tswarm migrate printed 'copied ... and checked it', the move is done);"
        f" nothing was copied, {shown} is as it was\n"
    )
    with open_storage("", postgres_url, existing=True) as other:
        assert view(other) == before


def test_a_database_with_an_empty_journal_or_one_table_of_it_is_refused(full, run, postgres):
    empty = postgres.new_database()
    open_storage("", empty).close()  # the schema, no rows
    assert run("migrate", "--to", empty).exit_code == 1
    one_table = postgres.new_database()
    with psycopg.connect(one_table, autocommit=True) as conn:
        conn.execute("CREATE TABLE readings (x int)")
    result = run("migrate", "--to", one_table)
    assert result.exit_code == 1 and "(tables readings)" in result.output
    assert tables(one_table) == ["readings"]



def test_a_database_with_only_the_alerts_tables_of_a_journal_is_refused(full, run, postgres):
    """What is left after dropping the other tables the refusal named: still another journal's alerts."""
    url = postgres.new_database()
    with open_storage("", url) as other:
        other.record_alert_changes([AlertChange("pi-node", None, AlertState("silent"), (("silent", "{}"),))], 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE bundle_files, bundles, meta, nodes, readings, rejected, schema_version CASCADE")
    result = run("migrate", "--to", url)
    assert result.exit_code == 1 and "(tables alert_states, alerts)" in result.output
    assert tables(url) == ["alert_states", "alerts"] and _alert_rows(url)[0] == [("pi-node", "silent", None, 1)]

def test_a_database_with_tables_of_its_own_is_used(full, run, postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE other_app (x int)")
    assert run("migrate", "--to", postgres_url).exit_code == 0
    assert tables(postgres_url) == [
        "alert_states", "alerts", "bundle_files", "bundles", "meta", "nodes", "other_app", "readings", "rejected",
        "schema_version",
    ]


@pytest.mark.parametrize("to, error", [
    ("mysql://root:pw-Qx1@db/tswarm", "--to must be a postgres:// or postgresql:// URL like"
     " postgres://user:password@host:5432/db, not a mysql:// one"),
    ("elsewhere/data", "--to must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db"
     " (a data dir is a target only on the way back, with DATABASE_URL or TSWARM_DATABASE_URL set)"),
    ("postgres://", "--to must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db;"
     " the one given names no host (not shown: it may hold a password)"),
    ("postgres://u:pw@Qx1@db/tswarm", "--to must be a postgres:// or postgresql:// URL like"
     " postgres://user:password@host:5432/db; the one given has an @ in its user or password (write it %40)"
     " (not shown: it may hold a password)"),
])
def test_a_target_that_is_no_postgres_url_is_one_line(full, run, tmp_path, to, error):
    result = run("migrate", "--to", to)
    assert (result.exit_code, result.output) == (1, f"Error: {error}\n")
    assert not (tmp_path / "elsewhere").exists()


def test_an_unreachable_server_is_one_line_without_the_password(full, run):
    from .servers import free_port

    result = run("migrate", "--to", f"postgres://tswarm:pw-Kq81@127.0.0.1:{free_port()}/tswarm")
    assert result.exit_code == 1
    assert result.output.startswith("Error: PostgreSQL at postgres://tswarm:***@127.0.0.1:") and "unavailable" in result.output
    assert "pw-Kq81" not in result.output and len(result.output.splitlines()) == 1


@pytest.mark.parametrize("password", ["127", "p"])
def test_a_short_password_is_masked_in_the_url_and_leaves_the_rest_of_the_error_as_it_was(full, run, password):
    """``127`` is also the start of 127.0.0.1, and ``p`` a letter of ``postgres`` and ``port``."""
    from .servers import free_port

    port = free_port()
    shown = f"postgres://tswarm:***@127.0.0.1:{port}/tswarm"
    result = run("migrate", "--to", f"postgres://tswarm:{password}@127.0.0.1:{port}/tswarm")
    assert (result.exit_code, result.output) == (1, (
        f"Error: PostgreSQL at {shown} is unavailable: connection failed: connection to server at \"127.0.0.1\","
        f" port {port} failed: Connection refused; nothing was copied, {shown} is as it was\n"
    ))


def test_a_port_that_is_no_number_is_quoted_as_given(full, run):
    result = run("migrate", "--to", "postgres://u:p@127.0.0.1:notaport/db")
    assert (result.exit_code, result.output) == (1, (
        "Error: PostgreSQL at postgres://u:***@127.0.0.1:notaport/db is unavailable: connection is bad:"
        ' invalid integer value "notaport" for connection option "port"; nothing was copied,'
        " postgres://u:***@127.0.0.1:notaport/db is as it was\n"
    ))


def test_a_url_libpq_cannot_read_is_one_line_without_the_password(full, run):
    """libpq's complaint quotes the part it could not read, the password itself: it shows as ***."""
    result = run("migrate", "--to", "postgres://u:pw%zz-Kq7@127.0.0.1:1/db")
    assert (result.exit_code, result.output) == (1, (
        'Error: cannot use PostgreSQL at postgres://u:***@127.0.0.1:1/db: invalid percent-encoded token: "***";'
        " nothing was copied, postgres://u:***@127.0.0.1:1/db is as it was\n"
    ))


def test_a_wrong_password_is_one_line_without_it(full, run, postgres, postgres_url):
    result = run("migrate", "--to", postgres_url.replace(postgres.PASSWORD, "wrong-Pw-5521"))
    assert result.exit_code == 1 and "password authentication failed" in result.output
    assert "wrong-Pw-5521" not in result.output and len(result.output.splitlines()) == 1


def test_a_source_without_a_journal_is_refused(run, postgres_url, data_dir):
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no journal in {data_dir}: 'tswarm node add' or 'tswarm serve' creates it"
        " (is --data-dir or TSWARM_DATA_DIR right?)\n"
    )
    assert tables(postgres_url) == [] and not data_dir.exists()


def test_a_postgres_source_without_a_journal_is_refused(run, postgres, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres.new_database())
    result = run("migrate", "--to", str(tmp_path / "back"))
    assert result.exit_code == 1 and result.output.startswith("Error: no journal in postgresql://postgres:***@")
    assert not (tmp_path / "back").exists()


def test_a_running_service_on_the_source_is_refused(full, run, postgres_url, data_dir):
    with hold_data_dir(data_dir):  # as `tswarm serve` holds it
        result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: data dir {data_dir} is in use by another tswarm serve")
    assert "readings it takes meanwhile would be left behind" in result.output
    assert tables(postgres_url) == []


# -- failures midway: the target stays empty --------------------------------------------------------


def test_the_connection_lost_mid_copy_leaves_the_database_empty(journal, postgres_url, data_dir):
    register(journal, "kitchen", PW)
    journal.add_readings([("kitchen", i, 20.0, 50.0) for i in range(1, 11)])
    batches = []

    def terminate(n):  # after the first batch of readings: the server drops the copying session
        batches.append(n)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    with pytest.raises(MigrateError) as failed:
        migrate(Config(data_dir=data_dir), journal, Target(postgres_url, postgres=True), batch=2, on_rows=terminate)
    assert batches  # it failed after copying had begun (COPY buffers: the loss shows at its end)
    assert "is unavailable" in str(failed.value) and str(failed.value).endswith("is as it was")
    assert tables(postgres_url) == []  # not even the schema


def test_a_row_postgresql_refuses_leaves_the_database_empty(journal, run, postgres_url):
    register(journal, "kitchen", PW)
    journal.add_readings([("kitchen", 1, 20.0, 50.0), ("kitchen", 2, 21.0, 51.0)])
    reading = journal.outbox_readings(0, 1)[0]
    journal.record_rejected([(reading, "InfluxDB said: bad\x00byte")])  # SQLite keeps a NUL, PostgreSQL text cannot
    result = run("migrate", "--to", postgres_url)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith("Error: cannot copy into postgresql://postgres:***@")
    assert "0x00" in result.output and "nothing was copied" in result.output
    assert tables(postgres_url) == []


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_copy_whose_counts_differ_from_its_source_is_not_kept(full, postgres_url, tmp_path, engine):
    from tswarm.storage.postgres import PostgresStorage
    from tswarm.storage.sqlite import SqliteStorage

    cls, target = (PostgresStorage, postgres_url) if engine == "postgres" else (SqliteStorage, tmp_path / "back")
    with full.dump() as dump:
        counted_wrong = dataclasses.replace(dump, counts=dataclasses.replace(dump.counts, readings=4, rejected=0))
        with pytest.raises(StorageUnusable, match=r"does not match its source \(readings 3 instead of 4, rejected 1 instead of 0\)"):
            cls.load(target, counted_wrong)
    if engine == "postgres":
        assert tables(postgres_url) == []
    else:
        assert not (tmp_path / "back").exists()


def test_a_failed_way_back_leaves_no_journal_in_the_data_dir(run, postgres_url, tmp_path, monkeypatch):
    with open_storage("", postgres_url) as source:
        register(source, "kitchen", PW)
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = run("migrate", "--to", str(blocked / "data"))
    assert result.exit_code == 1 and result.output.startswith("Error: data dir ") and "is a file" in result.output
    assert blocked.read_text() == ""


# -- any small journal round-trips -------------------------------------------------------------------

NAMES = st.text("abkz09_.-", min_size=1, max_size=6).filter(lambda s: s[0].isalnum())
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
VALUE = st.floats(allow_nan=False, allow_infinity=False)
EXTRA = st.builds(ReadingExtra, st.none() | st.floats(0.01, 20.0), st.none() | st.integers(-127, 0),
                  st.none() | st.integers(0, 3_600_000), st.none() | st.integers(0, 1_000_000))
NODE = st.fixed_dictionaries({
    "hash": TEXT, "created": st.booleans(), "halted": st.booleans(), "removed": st.booleans(),
    "interval": st.integers(60, 86_400),
    "staged": st.sampled_from([None, *BUNDLES]), "running": st.none() | TEXT, "rolled_back": st.none() | TEXT,
})


@settings(max_examples=15)
@given(
    nodes=st.dictionaries(NAMES, NODE, max_size=4),
    readings=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 10**12), VALUE, VALUE, EXTRA), max_size=12),
    forwarded=st.integers(0, 12),
    rejected=st.lists(st.tuples(st.integers(0, 11), TEXT), max_size=3),
    prune=st.booleans(),
    halt_all=st.booleans(),
    last_error=st.none() | TEXT,
)
def test_any_small_journal_moves_there_and_back_unchanged(
    postgres, nodes, readings, forwarded, rejected, prune, halt_all, last_error,
):
    url = postgres.new_database()
    with tempfile.TemporaryDirectory() as tmp:
        there, back = Path(tmp) / "there", Path(tmp) / "back"
        with open_storage(there) as source:
            for name, node in nodes.items():
                source.add_node(name, node["hash"])
                if node["created"]:
                    source.mark_created(name, 7)
                source.set_halt(name, node["halted"])
                source.set_interval(name, node["interval"])
                if node["staged"]:
                    source.add_bundle(node["staged"], [("node.py", node["staged"].encode() * 3)], 1)
                    source.stage_bundle(node["staged"], [name], 2)
                if node["running"] is not None:
                    source.report_firmware(name, node["running"], node["rolled_back"], 3)
            names = sorted(nodes)
            ts, rows = 0, []
            for i, step, t, h, extra in readings if names else ():
                ts += step
                rows.append((names[i % len(names)], ts, t, h, extra))
            source.add_readings(rows)
            for name, node in nodes.items():
                if node["removed"]:
                    source.remove_node(name)
            outbox = source.outbox_readings(0, 100)
            source.mark_forwarded(min(forwarded, len(outbox)),
                                  [(outbox[i], why) for i, why in rejected if i < len(outbox)])
            if prune and outbox:
                source.prune_readings(outbox[len(outbox) // 2].ts + 1, up_to_id=source.forward_cursor())
            source.set_halt(None, halt_all)
            if last_error is not None:
                source.set_meta(FORWARD_LAST_ERROR, last_error)
            before = view(source)
            migrate(Config(data_dir=there), source, Target(url, postgres=True))
        with open_storage("", url, existing=True) as middle:
            assert view(middle) == before
            migrate(Config(data_dir=Path(tmp) / "unused", database_url=url), middle, Target(str(back), postgres=False))
        with open_storage(back) as copy:
            assert view(copy) == before
