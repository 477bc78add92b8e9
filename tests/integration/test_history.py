"""Bulk reads span the whole history with TSWARM_STORE=influxdb, against the real InfluxDB 1.x.

A real `tswarm serve` (TSWARM_INFLUX_API=1) takes readings from nodes over HTTP and forwards them;
then the journal is pruned by the retention code, and `tswarm export` and `GET /api/readings` must
give exactly the same text as before the prune (the older part now streamed from InfluxDB with
chunked InfluxQL), with filters and with cursor paging across the horizon. With InfluxDB gone, a
range the journal no longer holds fails loudly.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import json
import urllib.parse

import pytest

from tswarm.storage import DB_FILENAME, open_storage
from tswarm.retention import prune
from tswarm.settings import Config
from tests.integration.test_influx import PASSWORD, VALUES, epoch, influx1_env, send, wait_for, wait_forwarded
from tests.conftest import ENGINES, journal_database, open_journal
from tests.servers import ServiceProcess, add_node, basic, free_port, request, run_cli

pytestmark = pytest.mark.integration

_exports = itertools.count()
NODES = ("porch", "attic", "cellar")  # registered in this order: ids are not in name order


def api(service, **params) -> tuple[int, dict, str]:
    status, headers, body = request("GET", f"{service.url}/api/readings?{urllib.parse.urlencode(params)}")
    return status, headers, body.decode()


def cli_export(data_dir, env, *args) -> str:
    """`tswarm export ARGS -o FILE`, the file's text byte for byte (CRLF kept)."""
    output = data_dir.parent / f"export-{next(_exports)}.out"
    run_cli(data_dir, "export", *args, "-o", str(output), env=env)
    return output.read_bytes().decode()


def pages(service, limit: int, **params) -> tuple[str, list]:
    """Every page of a paged download, rows joined as one export; and the cursors followed."""
    text, cursor, cursors = None, None, []
    while True:
        query = dict(params, limit=limit, **({"cursor": cursor} if cursor else {}))
        status, headers, body = api(service, **query)
        assert status == 200, body
        if text is None:
            text = body
        else:
            text += body.split("\r\n", 1)[1] if params.get("format", "csv") == "csv" else body
        cursor = headers.get("X-Next-Cursor")
        if cursor is None:
            return text, cursors
        cursors.append(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())


@pytest.fixture(scope="module", params=ENGINES)
def history(request, tmp_path_factory, influxdb1):
    """A service whose journal (on each engine in turn) was pruned in the middle of its readings; the
    exports from before."""
    with journal_database(request, request.param) as database_url:
        yield from _history(tmp_path_factory, influxdb1, database_url)


def _history(tmp_path_factory, influxdb1, database_url):
    root = tmp_path_factory.mktemp("history")
    data_dir, db = root / "data", influxdb1.new_database()
    env = influx1_env(data_dir, influxdb1, db, **({"TSWARM_DATABASE_URL": database_url} if database_url else {}))
    for name in NODES:
        add_node(data_dir, name, PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        # porch sends telemetry (each field on some readings), the others none: after the prune the
        # older half comes back from InfluxDB with the same cells as the journal had
        statuses = [send(service, name, data, **(TELEMETRY[i % len(TELEMETRY)] if name == "porch" else {}))
                    for i, data in enumerate(VALUES) for name in NODES]
        assert statuses == [202] * len(VALUES) * len(NODES)
        wait_forwarded(service)
        with open_storage(data_dir, database_url) as journal:
            stamps = [ts for ts, *_ in (row for batch in journal.iter_readings() for row in batch)]
        boundary = stamps[len(stamps) // 2]  # pruned: everything before the 13th reading of 24
        queries = {
            "all": {},
            "node": {"node": "cellar"},
            "ndjson": {"format": "ndjson"},
            "across": {"start": epoch(stamps[4]), "stop": epoch(stamps[-3])},
            "below": {"start": epoch(stamps[2]), "stop": epoch(stamps[9])},
            "node-from": {"node": "attic", "start": epoch(stamps[5])},
        }
        before = {name: api(service, **q)[2] for name, q in queries.items()}
        before_cli = {name: cli_export(data_dir, env, *cli_args(q)) for name, q in queries.items()}
        stale_cursor = api(service, limit=3)[1]["X-Next-Cursor"]  # a journal row the prune will take
        with open_storage(data_dir, database_url) as journal:
            pruned = prune(journal, Config(store="influxdb", journal_retention=1), now_ns=boundary + 10**9)
            horizon, left = journal.pruned_before(), journal.count_readings()
        yield dict(service=service, env=env, data_dir=data_dir, database_url=database_url, queries=queries, before=before,
                   before_cli=before_cli, stale_cursor=stale_cursor, stamps=stamps, boundary=boundary, pruned=pruned, horizon=horizon, left=left)


TELEMETRY = ({"vbat": 3.71, "rssi": -61, "awake_ms": 2140}, {}, {"vbat": 3.05}, {"rssi": -80, "lost": 2})


def cli_args(query: dict) -> list[str]:
    args = []
    for key, value in query.items():
        args += [f"--{key}", value]
    return args


def test_the_prune_really_took_the_older_half_out_of_the_journal(history):
    assert history["pruned"] == 12 and history["left"] == 12
    assert history["horizon"] == history["stamps"][11] + 1  # just past the newest reading pruned
    assert history["before"]["all"].count("\r\n") == 25  # header and 24 rows
    rows = history["before"]["all"].split("\r\n")
    assert sum(row.endswith(",3.71,-61,2140,") for row in rows) == 2  # both copies: pruned and kept halves
    assert sum(row.endswith(",,-80,,2") for row in rows) == 2 and sum(row.endswith(",3.05,,,") for row in rows) == 2


@pytest.mark.parametrize("name", ["all", "node", "ndjson", "across", "below", "node-from"])
def test_api_export_after_pruning_is_the_same_text_as_before(history, name):
    status, headers, body = api(history["service"], **history["queries"][name])
    assert status == 200, body
    assert body == history["before"][name]


@pytest.mark.parametrize("name", ["all", "node", "ndjson", "across", "below", "node-from"])
def test_cli_export_after_pruning_is_the_same_text_as_before(history, name):
    out = cli_export(history["data_dir"], history["env"], *cli_args(history["queries"][name]))
    assert out == history["before_cli"][name] == history["before"][name]


@pytest.mark.parametrize("limit", [1, 5, 12])
def test_cursor_paging_across_the_horizon_gives_the_whole_export(history, limit):
    text, cursors = pages(history["service"], limit)
    assert text == history["before"]["all"]
    kinds = {c.split(".")[0] for c in cursors}
    assert kinds == ({"h1", "r1"} if limit < 12 else {"h1"})  # cursors on both sides of the horizon


def test_cursor_paging_with_filters_and_ndjson(history):
    text, _ = pages(history["service"], 2, node="attic", format="ndjson")
    assert text == "".join(
        line + "\n" for line in history["before"]["ndjson"].splitlines() if '"node": "attic"' in line
    )
    across = history["queries"]["across"]
    assert pages(history["service"], 3, **across)[0] == history["before"]["across"]


def test_a_cursor_from_before_the_prune_resumes_where_it_was(history):
    status, _, body = api(history["service"], cursor=history["stale_cursor"])
    assert status == 200
    rows = history["before"]["all"].split("\r\n")
    # The row was pruned, and with it which node it was; but no other reading has its instant, so it
    # is the one InfluxDB has there: neither it nor any other comes again, none is lost.
    assert body == "\r\n".join(rows[:1] + rows[4:])  # header, then the 4th reading on


@pytest.mark.parametrize("limit, ahead", [(1, 1), (2, 2), (5, 1)])
def test_paging_while_the_pruner_moves_the_horizon_past_each_cursor(tmp_path, influxdb1, limit, ahead):
    """After every page the journal prunes past the row the page ended on (and ``ahead`` rows more),
    so each cursor names a row the journal no longer holds: the pages still join up to the export of
    before, every row once, in order, the moved rows now streamed from InfluxDB."""
    data_dir = tmp_path / "data"
    env = influx1_env(data_dir, influxdb1, influxdb1.new_database())
    for name in NODES:
        add_node(data_dir, name, PASSWORD, env=env)
    config = Config(store="influxdb", journal_retention=1)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, name, data, **(TELEMETRY[i % len(TELEMETRY)] if name == "attic" else {}))
                    for i, data in enumerate(VALUES[:4]) for name in NODES]
        assert statuses == [202] * 12
        wait_forwarded(service)
        before = api(service)[2]
        with open_storage(data_dir) as journal:
            stamps = [ts for batch in journal.iter_readings() for ts, *_ in batch]
        text, cursor, delivered, horizons = "", None, 0, []
        while True:
            status, headers, body = api(service, limit=limit, **({"cursor": cursor} if cursor else {}))
            assert status == 200, body
            text += body if cursor is None else body.split("\r\n", 1)[1]
            delivered += body.count("\r\n") - 1
            cursor = headers.get("X-Next-Cursor")
            if cursor is None:
                break
            prune_to = min(delivered + ahead, len(stamps) - 1)  # past the page's last row, never the newest
            with open_storage(data_dir) as journal:
                prune(journal, config, now_ns=stamps[prune_to] + 10**9)
                horizons.append(journal.pruned_before())
    assert text == before and delivered == 12
    assert horizons == sorted(horizons) and horizons[0] == stamps[min(limit + ahead, 11) - 1] + 1


def test_influxdb_down_fails_clearly_for_pruned_ranges_only(history, tmp_path):
    dead = dict(history["env"], TSWARM_INFLUX_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens
    result = run_cli(history["data_dir"], "export", env=dead, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: readings the journal has pruned are only in InfluxDB v1 API at")
    # What the journal still holds needs no InfluxDB.
    start = epoch(history["horizon"])
    newer = cli_export(history["data_dir"], dead, "--start", start)
    assert newer == history["before_cli"]["all"].split("\r\n", 1)[0] + "\r\n" + "".join(
        line + "\r\n" for line in history["before_cli"]["all"].split("\r\n")[13:] if line
    )

    # A second service on the same data dir is refused while the fixture's runs: this one gets a copy
    # of the SQLite journal; on PostgreSQL, a data dir of its own and the same database (another instance).
    copy = tmp_path / "data"
    copy.mkdir()
    if not history["database_url"]:
        import sqlite3

        with contextlib.closing(sqlite3.connect(history["data_dir"] / DB_FILENAME)) as src, \
                contextlib.closing(sqlite3.connect(copy / DB_FILENAME)) as dst:
            src.backup(dst)
    with ServiceProcess(copy, env=dict(dead, TSWARM_DATA_DIR=str(copy)), log_path=tmp_path / "serve.log") as service:
        status, headers, body = api(service)
        assert status == 503 and headers["Content-Type"].startswith("application/json")
        answer = json.loads(body)
        assert answer["error"] == "history_unavailable" and "Connection refused" in answer["detail"]
        status, _, body = api(service, limit=3)  # a page that starts below the horizon: the same
        assert status == 503
        status, _, body = api(service, start=start)
        assert status == 200 and body == newer


@pytest.mark.engines
def test_readings_influxdb_refused_are_still_exported_after_pruning(tmp_path, influxdb1_factory):
    """InfluxDB refuses node c's points (a series limit): once pruned, they come from the journal's
    `rejected` table, between InfluxDB's rows, so the export is still every reading stored."""
    server = influxdb1_factory(**{"max-series-per-database": 2})
    data_dir = tmp_path / "data"
    env = influx1_env(data_dir, server, "limited")
    for name in ("a", "b", "c"):
        add_node(data_dir, name, PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, "a", "20 40"), send(service, "b", "21 41")]
        wait_forwarded(service)  # a and b are InfluxDB's two series now
        statuses += [send(service, name, f"{22 + i} {42 + i}") for i in range(3) for name in ("a", "c", "b")]
        health = wait_for(lambda: (h := wait_forwarded(service))["rejected"] == 3 and h, "c's readings refused")
        before = api(service)[2]
        with open_journal(data_dir) as journal:
            last = max(ts for batch in journal.iter_readings() for ts, *_ in batch)
            pruned = prune(journal, Config(store="influxdb", journal_retention=1), now_ns=last + 1 + 10**9)
            assert journal.count_readings() == 0 and journal.count_rejected() == 3
        after = api(service)[2]
    assert statuses == [202] * 11 and health["backlog"] == 0 and pruned == 11
    assert before.count("\r\n") == 12 and before.count(",c,") == 3
    assert after == before


# -- catching up across the horizon: a kept reading older than the journal's retention -------------------


def send_kept(service, name, data, age_s):
    """POST a reading kept on the node through an outage, taken ``age_s`` seconds ago."""
    body = json.dumps({"name": name, "data": data, "age": age_s})
    headers = {"Authorization": basic(name, PASSWORD), "Content-Type": "application/json"}
    return request("POST", f"{service.url}/api/nodes/{name}", body, headers)[0]


def test_a_reader_catches_up_on_a_kept_reading_below_the_horizon_or_hears_it_expired(tmp_path, influxdb1):
    """SQLite only: the passes are the engine's reads, tested on both engines in tests/test_catchup.py."""
    data_dir = tmp_path / "data"
    env = influx1_env(data_dir, influxdb1, influxdb1.new_database())
    add_node(data_dir, "porch", PASSWORD, env=env)
    config = Config(store="influxdb", journal_retention=1)
    with ServiceProcess(data_dir, env=env) as service:
        assert [send(service, "porch", data) for data in VALUES[:3]] == [202] * 3
        wait_forwarded(service)
        status, headers, body = api(service, format="ndjson")
        assert status == 200 and len(body.splitlines()) == 3
        resume = headers["X-Resume-Cursor"]
        with open_storage(data_dir) as journal:
            assert prune(journal, config, now_ns=2**62) == 3  # all of it: InfluxDB has them
        assert send_kept(service, "porch", "19.5 61", age_s=86400) == 202  # a day old: below the horizon
        wait_forwarded(service)
        status, headers, body = api(service, format="ndjson", cursor=resume)
        assert status == 200 and [json.loads(line)["temperature"] for line in body.splitlines()] == [19.5]
        assert "X-Next-Cursor" not in headers
        resume = headers["X-Resume-Cursor"]
        status, _, body = api(service, format="ndjson")  # a new reader: InfluxDB's part has it, once
        assert [json.loads(line)["temperature"] for line in body.splitlines()] == [19.5, 23.0, 23.4, -3.2]

        assert send_kept(service, "porch", "18.5 62", age_s=86400) == 202
        wait_forwarded(service)
        with open_storage(data_dir) as journal:  # pruned before the reader came back for it
            assert prune(journal, config, now_ns=2**62) == 2
        status, _, body = api(service, cursor=resume)
        assert status == 410 and json.loads(body)["error"] == "cursor_expired"
