"""Store and forward to real InfluxDB 1.x (Debian's influxd) and, for the v2 write API, VictoriaMetrics.

The real `tswarm serve` runs with TSWARM_STORE=influxdb; nodes send over HTTP; what arrives is read
back with InfluxQL (or VictoriaMetrics' export) and compared whole with the journal.
"""
from __future__ import annotations

import json
import time

import pytest

from tswarm.storage import OutboxReading, open_storage
from tests.servers import ServiceProcess, add_node, basic, request, run_cli, tswarm_env

pytestmark = pytest.mark.integration

PASSWORD = "pw-forwarder-test"
VALUES = ["23 45", "23.4 45.1", "-3.2 80.0", "21.7 33.3", "0 0", "79.9 100", "-39.5 12.25", "18.1 55.55"]


def influx1_env(data_dir, server, db, **extra):
    return tswarm_env(
        data_dir, TSWARM_STORE="influxdb", TSWARM_INFLUX_API="1", TSWARM_INFLUX_URL=server.url,
        TSWARM_INFLUX_DB=db, TSWARM_FORWARD_MAX_BACKOFF="1", **extra,
    )


def send(service, name, data, **fields):
    """POST one reading as the firmware does (``fields``: the optional ones new firmware adds beside
    ``name`` and ``data``: vbat, rssi, awake_ms, age, boot, seq, lost); returns the status code."""
    body = json.dumps({"name": name, "data": data, **fields})
    headers = {"Authorization": basic(name, PASSWORD), "Content-Type": "application/json"}
    return request("POST", f"{service.url}/api/nodes/{name}", body, headers)[0]


def healthz(service) -> dict:
    status, _, body = request("GET", service.url + "/healthz")
    assert status == 200, body
    return json.loads(body)


def wait_for(predicate, what: str, timeout: float = 60):
    """Poll until ``predicate()`` is truthy (a deadline against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def wait_forwarded(service) -> dict:
    return wait_for(lambda: (h := healthz(service))["backlog"] == 0 and h["in_flight"] == 0 and h, "an empty backlog")


def journal_rows(data_dir) -> list[list]:
    """Every reading in the journal as ``[ts, node, temperature, humidity]``, in time order."""
    with open_storage(data_dir) as journal:
        readings = journal.outbox_readings(0, 10**9)
    return sorted([r.ts, r.node, r.temperature, r.humidity] for r in readings)


def influx_rows(server, db) -> list[list]:
    return server.rows("SELECT node, temperature, humidity FROM climate", db)


def epoch(ts_ns: int) -> str:
    return f"{ts_ns // 10**9}.{ts_ns % 10**9:09d}"


def test_readings_reach_influxdb1_with_exact_values_and_timestamps(tmp_path, influxdb1):
    data_dir, db = tmp_path / "data", influxdb1.new_database()  # not created yet: the service creates it
    env = influx1_env(data_dir, influxdb1, db)
    for name in ("kitchen", "cellar"):
        add_node(data_dir, name, PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, name, data) for data in VALUES for name in ("kitchen", "cellar")]
        wait_forwarded(service)
        health = healthz(service)
    assert statuses == [202] * 2 * len(VALUES)
    expected = journal_rows(data_dir)
    assert len(expected) == 2 * len(VALUES)
    assert influx_rows(influxdb1, db) == expected  # exact floats, exact ns timestamps, nothing more
    assert {k: health[k] for k in ("ok", "store", "backlog", "oldest_age_s", "last_error", "rejected")} == {
        "ok": True, "store": "influxdb", "backlog": 0, "oldest_age_s": None, "last_error": None, "rejected": 0,
    }
    # The field types are floats even for DHT11's integers ("23 45").
    fields = influxdb1.rows("SHOW FIELD KEYS FROM climate", db)
    assert sorted(fields) == [["humidity", "float"], ["temperature", "float"]]


# (data, the optional fields): telemetry in any mix, a reading kept through an outage (age), one sent
# again after a lost answer (the same boot and seq), and a reading without any of it.
TELEMETRY = [
    ("21.5 40", dict(vbat=3.92, rssi=-58, awake_ms=812, boot="b1", seq=1)),
    ("21.6 41", dict(vbat=3.3, boot="b1", seq=2)),
    ("21.6 41", dict(vbat=3.3, boot="b1", seq=2)),  # its 202 was lost: sent again, stored once
    ("19.0 60", dict(rssi=-90, awake_ms=5400, lost=3, age=600, boot="b1", seq=3)),  # kept ten minutes
    ("22.0 39", {}),
]


def journal_telemetry(data_dir) -> list[list]:
    """Every reading with its telemetry as ``[ts, node, temperature, humidity, vbat, rssi, awake_ms, lost]``."""
    with open_storage(data_dir) as journal:
        readings = journal.outbox_readings(0, 10**9, with_extra=True)
    return sorted([r.ts, r.node, r.temperature, r.humidity, r.vbat, r.rssi, r.awake_ms, r.lost] for r in readings)


def test_telemetry_reaches_influxdb1_as_typed_fields_of_the_reading_and_is_queryable(tmp_path, influxdb1):
    data_dir, db = tmp_path / "data", influxdb1.new_database()
    env = influx1_env(data_dir, influxdb1, db)
    add_node(data_dir, "attic", PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, "attic", data, **fields) for data, fields in TELEMETRY]
        wait_forwarded(service)
    assert statuses == [202] * len(TELEMETRY)
    expected = journal_telemetry(data_dir)
    assert len(expected) == 4  # the repeat is stored once
    got = influxdb1.rows("SELECT node, temperature, humidity, vbat, rssi, awake_ms, lost FROM climate", db)
    assert got == expected  # exact values, null where the node sent nothing, the kept reading at its own time
    kept, first_sent = [row for row in got if row[7] == 3], [row for row in got if row[4] == 3.92]
    assert len(kept) == 1 and kept[0][0] < first_sent[0][0] - 500 * 10**9  # ten minutes before it was sent
    fields = influxdb1.rows("SHOW FIELD KEYS FROM climate", db)
    assert sorted(fields) == [
        ["awake_ms", "integer"], ["humidity", "float"], ["lost", "integer"], ["rssi", "integer"],
        ["temperature", "float"], ["vbat", "float"],
    ]
    # What a battery panel or alert asks: each node's last voltage, and the weakest signal.
    assert influxdb1.rows('SELECT last("vbat") FROM climate GROUP BY "node"', db)[0][1] == 3.3
    assert influxdb1.rows('SELECT min("rssi") FROM climate', db)[0][1] == -90


def test_v2_write_path_through_victoria_metrics(tmp_path, victoria_metrics):
    data_dir = tmp_path / "data"
    env = tswarm_env(
        data_dir, TSWARM_STORE="influxdb", TSWARM_INFLUX_API="2", TSWARM_INFLUX_URL=victoria_metrics.url,
        TSWARM_INFLUX_TOKEN="not-checked", TSWARM_INFLUX_ORG="tswarm", TSWARM_INFLUX_BUCKET="tswarm",
    )
    names = ["v2-kitchen", "v2-cellar"]
    for name in names:
        add_node(data_dir, name, PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, name, data) for data in VALUES for name in names]
        wait_forwarded(service)
    assert statuses == [202] * 2 * len(VALUES)
    rows = journal_rows(data_dir)
    for field, column in (("temperature", 2), ("humidity", 3)):
        # VictoriaMetrics names the series measurement_field and keeps milliseconds.
        expected = {name: sorted((r[0] // 1_000_000, r[column]) for r in rows if r[1] == name) for name in names}
        series = wait_for(
            lambda: (s := victoria_metrics.export(f'climate_{field}{{node=~"v2-.*"}}'))
            and sum(len(x["values"]) for x in s) == len(rows) and s,
            f"{field} in VictoriaMetrics",
        )
        got = {x["metric"]["node"]: sorted(zip(x["timestamps"], x["values"])) for x in series}
        assert {x["metric"]["__name__"] for x in series} == {f"climate_{field}"}
        assert got == expected


def test_influxdb1_gives_the_telemetry_back_to_the_history_reads(tmp_path, influxdb1):
    """What an export below the journal's horizon reads (V1History, with_extra=True): each reading's
    telemetry as stored, None for the fields its point lacks; a database that never saw a telemetry
    field answers too, and without with_extra the rows are today's four columns."""
    from tswarm.influx.query import V1History
    from tswarm.influx.lines import line_protocol

    data_dir, db = tmp_path / "data", influxdb1.new_database()
    env = influx1_env(data_dir, influxdb1, db)
    add_node(data_dir, "attic", PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        assert [send(service, "attic", data, **fields) for data, fields in TELEMETRY] == [202] * len(TELEMETRY)
        wait_forwarded(service)
    expected = journal_telemetry(data_dir)
    with V1History(influxdb1.url, db, chunk_size=2) as history:
        got = list(history.readings(None, 2**62, with_extra=True))
        plain = list(history.readings(None, 2**62, "attic"))
    assert [list(row) for row in got] == expected
    assert [type(row[4]) for row in got if row[4] is not None] == [float, float]
    assert plain == [tuple(row[:4]) for row in expected]
    # Only the seed's readings: the fields are not known to this database at all.
    old_db = influxdb1.new_database()
    influxdb1.query(f'CREATE DATABASE "{old_db}"')
    influxdb1.write(line_protocol([OutboxReading(1, "cellar", 5_000, 12.0, 80.0)]).decode(), old_db)
    with V1History(influxdb1.url, old_db) as history:
        assert list(history.readings(None, 2**62, with_extra=True)) == [(5_000, "cellar", 12.0, 80.0, None, None, None, None)]


def test_telemetry_through_the_v2_write_path_lands_in_victoria_metrics(tmp_path, victoria_metrics):
    """VictoriaMetrics names each field's series ``climate_<field>``: one per telemetry field, with
    exactly the readings that carried it."""
    data_dir = tmp_path / "data"
    env = tswarm_env(
        data_dir, TSWARM_STORE="influxdb", TSWARM_INFLUX_API="2", TSWARM_INFLUX_URL=victoria_metrics.url,
        TSWARM_INFLUX_TOKEN="not-checked", TSWARM_INFLUX_ORG="tswarm", TSWARM_INFLUX_BUCKET="tswarm",
    )
    add_node(data_dir, "v2-telemetry", PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, "v2-telemetry", data, **fields) for data, fields in TELEMETRY]
        wait_forwarded(service)
    assert statuses == [202] * len(TELEMETRY)
    rows = journal_telemetry(data_dir)
    for field, column in (("vbat", 4), ("rssi", 5), ("awake_ms", 6), ("lost", 7)):
        expected = sorted((r[0] // 1_000_000, r[column]) for r in rows if r[column] is not None)
        series = wait_for(
            lambda: (s := victoria_metrics.export(f'climate_{field}{{node="v2-telemetry"}}'))
            and sum(len(x["values"]) for x in s) == len(expected) and s,
            f"{field} in VictoriaMetrics",
        )
        assert [sorted(zip(x["timestamps"], x["values"])) for x in series] == [expected], field


def test_outage_every_reading_acked_meanwhile_arrives_once_in_order(tmp_path, influxdb1_factory):
    server = influxdb1_factory()
    data_dir, db = tmp_path / "data", "outage"
    env = influx1_env(data_dir, server, db)
    add_node(data_dir, "porch", PASSWORD, env=env)
    add_node(data_dir, "attic", PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        before = [send(service, "porch", "20 50"), send(service, "attic", "21 51")]
        wait_forwarded(service)

        server.stop()
        during = []
        for i in range(30):
            during.append(send(service, "porch", f"{10 + i / 10:.1f} {40 + i}"))
            during.append(send(service, "attic", f"{-10 - i / 10:.1f} {60 - i}"))
        down = wait_for(lambda: (h := healthz(service))["last_error"] and h, "the outage to show in /healthz")
        status = json.loads(run_cli(data_dir, "status", "--json", env=env).stdout)  # no server needed

        server.start()  # same data folder
        after = [send(service, "porch", "22 52")]
        up = wait_forwarded(service)
    assert before + during + after == [202] * (2 + 60 + 1)  # never a 5xx to a node
    assert down["backlog"] == 60 and down["oldest_age_s"] > 0 and "Error" in down["last_error"]["message"]
    assert status["backlog"] == 60 and status["last_error"] is not None
    assert up["last_error"] is None
    expected = journal_rows(data_dir)
    assert len(expected) == 63
    got = influx_rows(server, db)
    assert got == expected  # all there, none twice (same count), same values and timestamps
    for node in ("porch", "attic"):  # in order: per node the arrival order is the journal's
        assert [r for r in got if r[1] == node] == [r for r in expected if r[1] == node]


def test_sigkill_while_a_batch_is_in_flight_loses_nothing(tmp_path, influxdb1_factory):
    server = influxdb1_factory()
    data_dir, db = tmp_path / "data", "killed"
    env = influx1_env(data_dir, server, db)
    add_node(data_dir, "shed", PASSWORD, env=env)
    service = ServiceProcess(data_dir, env=env).start()
    try:
        send(service, "shed", "15 60")
        wait_forwarded(service)
        server.pause()  # accepts the connection, answers nothing: the next batch stays in flight
        acked = [send(service, "shed", f"{15 + i / 10:.1f} {60 - i}") for i in range(20)]
        wait_for(lambda: healthz(service)["in_flight"] > 0, "a batch in flight")
        service.kill()  # SIGKILL
        server.resume()
        assert json.loads(run_cli(data_dir, "status", "--json", env=env).stdout)["backlog"] > 0
        service = ServiceProcess(data_dir, env=env).start()
        acked.append(send(service, "shed", "16 61"))
        wait_forwarded(service)
    finally:
        service.stop()
    assert acked == [202] * 21
    expected = journal_rows(data_dir)
    assert len(expected) == 22
    assert influx_rows(server, db) == expected


def test_a_point_influxdb_refuses_is_recorded_and_surfaced_and_the_rest_goes_on(tmp_path, influxdb1_factory):
    # This InfluxDB takes two series per database: a third node's points get "400 partial write".
    server = influxdb1_factory(**{"max-series-per-database": 2})
    data_dir, db = tmp_path / "data", "limited"
    env = influx1_env(data_dir, server, db)
    for name in ("a", "b", "c"):
        add_node(data_dir, name, PASSWORD, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, "a", "20 40"), send(service, "b", "21 41")]
        wait_forwarded(service)  # a and b are InfluxDB's two series now
        server.stop()  # so that the readings below go in one batch, which InfluxDB refuses in part
        statuses += [send(service, name, f"{22 + i} {42 + i}") for i in range(3) for name in ("a", "c", "b")]
        wait_for(lambda: healthz(service)["last_error"], "the forwarder to notice")
        server.start()
        health = wait_forwarded(service)  # not retried for ever: the backlog empties
    assert statuses == [202] * 11
    journal = journal_rows(data_dir)
    assert influx_rows(server, db) == [r for r in journal if r[1] != "c"]
    assert health["rejected"] == 3 and health["backlog"] == 0
    with open_storage(data_dir) as j:
        rejected = j.rejected_readings()
    assert sorted([r.ts, r.node, r.temperature, r.humidity] for r, _, _ in rejected) == [
        r for r in journal if r[1] == "c"
    ]
    assert all("max-series-per-database limit exceeded" in reason for _, reason, _ in rejected)
    out = run_cli(data_dir, "status", env=env).stdout
    assert "rejected    3 reading(s) InfluxDB refused for good" in out
    assert out.count("max-series-per-database limit exceeded") == 3


def test_forward_replays_a_time_range_already_in_the_journal(tmp_path, influxdb1):
    data_dir, db = tmp_path / "data", influxdb1.new_database()
    plain = tswarm_env(data_dir)  # store=sqlite: nothing is forwarded while collecting
    add_node(data_dir, "garden", PASSWORD, env=plain)
    with ServiceProcess(data_dir, env=plain) as service:
        statuses = [send(service, "garden", data) for data in VALUES]
    assert statuses == [202] * len(VALUES)
    rows = journal_rows(data_dir)
    since, until = rows[2][0], rows[-2][0]  # a middle range: --since inclusive, --until exclusive
    env = influx1_env(data_dir, influxdb1, db, TSWARM_FORWARD_BATCH="2")
    result = run_cli(data_dir, "forward", "--since", epoch(since), "--until", epoch(until), env=env)
    assert result.stdout.strip() == f"sent {len(rows) - 4} reading(s) to InfluxDB"
    assert influx_rows(influxdb1, db) == rows[2:-2]
    run_cli(data_dir, "forward", "--since", "2000-01-01", env=env)  # the whole journal, again: harmless
    assert influx_rows(influxdb1, db) == rows


# `tswarm forward` in-process (click's standalone mode exits), then which heavy modules it loaded.
FORWARD_AND_SAY_WHAT_LOADED = """
import atexit, sys
atexit.register(lambda: print("loaded:", sorted(m for m in ("aiohttp", "influxdb_client") if m in sys.modules)))
import tswarm.cli
tswarm.cli.cli(["forward", "--since", "2000-01-01"])
"""


def test_forward_to_influxdb1_writes_every_point_without_loading_influxdb_client(tmp_path, influxdb1):
    """influxdb-client costs about a second of CPU to import (numpy, reactivex...), a good part of a
    `tswarm forward` of a million readings: the v1 API's path (line protocol, gzip, POST /write) and
    the encoder's pieces need none of it."""
    import subprocess
    import sys

    data_dir, db = tmp_path / "data", influxdb1.new_database()
    plain = tswarm_env(data_dir)
    add_node(data_dir, "garden", PASSWORD, env=plain)
    with ServiceProcess(data_dir, env=plain) as service:
        statuses = [send(service, "garden", data, vbat=3.7, rssi=-60) for data in VALUES]
    assert statuses == [202] * len(VALUES)
    done = subprocess.run([sys.executable, "-c", FORWARD_AND_SAY_WHAT_LOADED], env=influx1_env(data_dir, influxdb1, db),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"sent {len(VALUES)} reading(s) to InfluxDB", "loaded: ['aiohttp']"]
    assert influx_rows(influxdb1, db) == journal_rows(data_dir)
