"""Every InfluxQL query of the checked-in dashboards runs against the real InfluxDB 1.x and returns the readings.

The real `tswarm serve` (TSWARM_STORE=influxdb, TSWARM_INFLUX_API=1) forwards what two nodes send;
a third node, silent for an hour, is written with the forwarder's own line protocol
(tswarm.influx.lines.line_protocol), since the service stamps readings with the time they arrive.
Each panel query and the `node` template variable's query are taken from grafana/dashboards/influxql/*.json,
Grafana's macros are expanded as Grafana does ($timeFilter, $__interval, $node), and the answer is compared
whole with what the journal holds.

The battery and signal panels and the alert rules (grafana/provisioning/alerting/tswarm.yaml, the rules
`tswarm grafana provision` sends) run against a second database holding points as newer firmware's
readings become: fields vbat (float), rssi and awake_ms (integers) beside temperature and humidity, in the
measurement and tag the forwarder writes (written here with influxdb-client's Point, so the test does not
depend on the forwarder carrying them); one node sends no telemetry, as the seed firmware. Grafana's
server-side expressions of a rule (B: the last value of each series, C: the threshold) are applied to
the answer in Python, as Grafana would.

The Flux dashboards and rules cannot run here (no InfluxDB 2.x exists on this machine);
tests/test_grafana_dashboards.py checks their structure.
"""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from influxdb_client import Point, WritePrecision

from tswarm.influx import MEASUREMENT, TAG_NODE
from tswarm.influx.lines import line_protocol
from tswarm.storage import OutboxReading, open_storage
from tests.integration.test_influx import PASSWORD, influx1_env, send, wait_forwarded
from tests.servers import ServiceProcess, add_node

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards" / "influxql"
ALERTING = ROOT / "grafana" / "provisioning" / "alerting" / "tswarm.yaml"
INTERVAL_S = 1  # $__interval for the test: one-second buckets
SENT = {
    "kitchen-1": ["21.5 40", "21.7 41.5", "22 43"],
    "cellar.2": ["11 80", "10.5 81"],
}
SILENT = OutboxReading(0, "attic_3", time.time_ns() - 3600 * 10**9, 5.5, 60.0)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, influxdb1):
    """(database, readings as [ts, node, temperature, humidity], query window in ms)."""
    tmp = tmp_path_factory.mktemp("grafana-queries")
    data_dir, db = tmp / "data", influxdb1.new_database()
    env = influx1_env(data_dir, influxdb1, db)
    for name in SENT:
        add_node(data_dir, name, PASSWORD, env=env)
    start_ms = time.time_ns() // 10**6 - 2 * 3600 * 1000
    with ServiceProcess(data_dir, env=env) as service:
        statuses = [send(service, name, data) for name, values in SENT.items() for data in values]
        wait_forwarded(service)
    assert statuses == [202] * 5
    influxdb1.write(line_protocol([SILENT]).decode(), db)
    with open_storage(data_dir) as journal:
        readings = [[r.ts, r.node, r.temperature, r.humidity] for r in journal.outbox_readings(0, 10**9)]
    readings.append([SILENT.ts, SILENT.node, SILENT.temperature, SILENT.humidity])
    assert len(readings) == 6
    return db, sorted(readings), (start_ms, time.time_ns() // 10**6 + 60_000)


def expand(query: str, window_ms: tuple[int, int], node: str | None = None) -> str:
    """Grafana's InfluxQL macro expansion for a dashboard query."""
    query = query.replace("$timeFilter", f"time >= {window_ms[0]}ms and time <= {window_ms[1]}ms")
    query = query.replace("$__interval", f"{INTERVAL_S}s")
    if node is not None:
        # Inside /regex/ Grafana escapes the value's regex characters.
        query = query.replace("/^$node$/", "/^" + re.sub(r"([\\/.^$*+?()\[\]{}|-])", r"\\\1", node) + "$/")
    assert "$" not in query.replace("$/", ""), f"unexpanded macro in {query!r}"
    return query


def targets(dashboard: str):
    data = json.loads((DASHBOARDS / f"{dashboard}.json").read_text())
    for panel in data["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["refId"], target["query"]


def rows(influxdb1, db, query) -> list[list]:
    """[node tag or None, *row] for every row of every series of the answer."""
    result = influxdb1.query(query, db)[0]
    return [
        [series.get("tags", {}).get("node"), *row] for series in result.get("series", []) for row in series["values"]
    ]


def by_node(readings):
    grouped = defaultdict(list)
    for ts, node, temperature, humidity in readings:
        grouped[node].append((ts, temperature, humidity))
    return grouped


def means(readings, column: int) -> list[list]:
    """What `mean(field) GROUP BY time(1s), node fill(none)` should give: [node, bucket_ns, mean]."""
    buckets = defaultdict(list)
    for ts, node, *values in readings:
        buckets[(node, ts - ts % (INTERVAL_S * 10**9))].append(values[column])
    return sorted([node, bucket, pytest.approx(sum(v) / len(v))] for (node, bucket), v in buckets.items())


def test_every_influxql_panel_query_is_checked():
    checked = {
        ("overview", "Temperature", "A"), ("overview", "Humidity", "A"), ("overview", "Last seen", "A"),
        ("overview", "Nodes gone silent", "A"), ("overview", "Nodes gone silent", "B"),
        ("overview", "Battery", "A"), ("overview", "Signal", "A"),
        ("node", "Temperature now", "A"), ("node", "Humidity now", "A"), ("node", "Last seen", "A"),
        ("node", "Readings in range", "A"), ("node", "Temperature", "A"), ("node", "Humidity", "A"),
        ("node", "Battery", "A"), ("node", "Signal", "A"),
    }
    found = {(d, title, ref) for d in ("overview", "node") for title, ref, _ in targets(d)}
    assert found == checked


def test_overview_series_hold_every_node_readings(influxdb1, swarm):
    db, readings, window = swarm
    queries = {title: q for title, _, q in targets("overview")}
    for title, column in (("Temperature", 0), ("Humidity", 1)):
        got = sorted(rows(influxdb1, db, expand(queries[title], window)))
        assert got == means(readings, column), title


def test_overview_last_seen_and_gone_silent(influxdb1, swarm):
    db, readings, window = swarm
    last = {node: max(values) for node, values in by_node(readings).items()}
    queries = {(title, ref): q for title, ref, q in targets("overview")}
    got = sorted(rows(influxdb1, db, expand(queries[("Last seen", "A")], window)))
    assert got == sorted([node, ts, temperature] for node, (ts, temperature, _) in last.items())

    # The panel joins A (last seen) and B (readings in the last 15 min) by node and keeps rows without B.
    seen = rows(influxdb1, db, expand(queries[("Nodes gone silent", "A")], window))
    recent = rows(influxdb1, db, expand(queries[("Nodes gone silent", "B")], window))
    assert sorted(r[0] for r in seen) == sorted([*SENT, SILENT.node])
    assert sorted((r[0], r[2]) for r in recent) == sorted((node, len(values)) for node, values in SENT.items())
    silent = sorted(r[0] for r in seen if r[0] not in {r[0] for r in recent})
    assert silent == [SILENT.node]


def test_node_variable_lists_every_node(influxdb1, swarm):
    db, _, _ = swarm
    data = json.loads((DASHBOARDS / "node.json").read_text())
    (variable,) = [v for v in data["templating"]["list"] if v["name"] == "node"]
    assert variable["type"] == "query" and variable["datasource"]["uid"] == "tswarm-influxql"
    got = influxdb1.rows(variable["query"], db)
    assert got == [["node", name] for name in sorted([*SENT, SILENT.node])]


@pytest.mark.parametrize("node", [*SENT, SILENT.node])
def test_node_dashboard_shows_only_that_node(influxdb1, swarm, node):
    db, readings, window = swarm
    mine = [r for r in readings if r[1] == node]
    last_ts, last_temperature, last_humidity = max(by_node(readings)[node])
    queries = {title: q for title, _, q in targets("node")}

    def run(title):
        return rows(influxdb1, db, expand(queries[title], window, node=node))

    assert run("Temperature now") == [[None, last_ts, last_temperature]]
    assert run("Humidity now") == [[None, last_ts, last_humidity]]
    assert run("Last seen") == [[node, last_ts, last_temperature]]
    assert run("Readings in range") == [[None, window[0] * 10**6, len(mine)]]
    assert sorted(run("Temperature")) == means(mine, 0)
    assert sorted(run("Humidity")) == means(mine, 1)


# -- telemetry: the battery and signal panels -------------------------------------------------------

MINUTE_NS = 60 * 10**9
NOW_NS = time.time_ns()
# node -> [(minutes ago, vbat, rssi, awake_ms)]; None: the seed firmware's reading without telemetry.
TELEMETRY = {
    "solar-1": [(30, 4.12, -55, 812), (20, 4.05, -61, 790), (10, 3.98, -58, 1020)],
    "weak.2": [(25, 3.41, -84, 2310), (5, 3.18, -88, 2650)],  # below 3.3 V at its latest reading
    "quiet_3": [(150, 3.05, -70, 900), (90, 3.72, -67, 880)],  # silent for 90 minutes, battery fine at its last
    "seed-4": [(15, None, None, None), (3, None, None, None)],
}


@pytest.fixture(scope="module")
def telemetry(influxdb1):
    """(database, points as [ts, node, vbat, rssi, awake_ms], query window in ms)."""
    db = influxdb1.new_database()
    influxdb1.query(f'CREATE DATABASE "{db}"')
    points, lines = [], []
    for node, readings in TELEMETRY.items():
        for minutes, vbat, rssi, awake_ms in readings:
            ts = NOW_NS - minutes * MINUTE_NS + len(lines)  # unique stamps, as the service gives
            point = Point(MEASUREMENT).tag(TAG_NODE, node).field("temperature", 20.5).field("humidity", 50.0)
            if vbat is not None:
                point.field("vbat", vbat).field("rssi", rssi).field("awake_ms", awake_ms)
                points.append([ts, node, vbat, rssi, awake_ms])
            lines.append(point.time(ts, WritePrecision.NS).to_line_protocol())
    assert "rssi=-55i" in lines[0] and "awake_ms=812i" in lines[0] and "vbat=4.12" in lines[0]
    influxdb1.write("\n".join(lines), db)
    return db, sorted(points), (NOW_NS // 10**6 - 4 * 3600 * 1000, time.time_ns() // 10**6 + 60_000)


def test_the_telemetry_fields_have_the_types_the_forwarder_writes(influxdb1, telemetry):
    db, _, _ = telemetry
    assert influxdb1.rows(f'SHOW FIELD KEYS FROM "{MEASUREMENT}"', db) == [
        ["awake_ms", "integer"], ["humidity", "float"], ["rssi", "integer"], ["temperature", "float"], ["vbat", "float"],
    ]


def test_overview_battery_and_signal_hold_each_node_with_telemetry(influxdb1, telemetry):
    db, points, window = telemetry
    queries = {title: q for title, _, q in targets("overview")}
    readings = [[ts, node, vbat, rssi] for ts, node, vbat, rssi, _ in points]
    for title, column in (("Battery", 0), ("Signal", 1)):
        got = sorted(rows(influxdb1, db, expand(queries[title], window)))
        assert got == means(readings, column), title
        assert {row[0] for row in got} == {"solar-1", "weak.2", "quiet_3"}  # not the seed firmware's node


@pytest.mark.parametrize("node", list(TELEMETRY))
def test_node_battery_and_signal_show_only_that_node(influxdb1, telemetry, node):
    db, points, window = telemetry
    mine = [[ts, name, vbat, rssi] for ts, name, vbat, rssi, _ in points if name == node]
    queries = {title: q for title, _, q in targets("node")}
    for title, column in (("Battery", 0), ("Signal", 1)):
        assert sorted(rows(influxdb1, db, expand(queries[title], window, node=node))) == means(mine, column), title


# -- the alert rules ---------------------------------------------------------------------------------


def alert_rules() -> dict[str, dict]:
    (group,) = yaml.safe_load(ALERTING.read_text())["groups"]
    return {rule["uid"]: rule for rule in group["rules"]}


def evaluate(influxdb1, db, rule) -> dict[str, bool]:
    """Each node's instance of the rule: query A over its relative time range, then Grafana's B (the last
    value of each series) and C (the threshold) as the rule's expressions say; True: firing."""
    a, b, c = rule["data"]
    assert (a["refId"], b["model"]["type"], c["model"]["type"], rule["condition"]) == ("A", "reduce", "threshold", "C")
    assert b["model"]["reducer"] == "last" and b["model"]["expression"] == "A" and c["model"]["expression"] == "B"
    now_ms = time.time_ns() // 10**6
    span = a["relativeTimeRange"]
    query = expand(a["model"]["query"], (now_ms - span["from"] * 1000, now_ms - span["to"] * 1000))
    last = {}
    for series in influxdb1.query(query, db)[0].get("series", []):
        last[series["tags"][TAG_NODE]] = series["values"][-1][1]
    (condition,) = c["model"]["conditions"]
    kind, (limit,) = condition["evaluator"]["type"], condition["evaluator"]["params"]
    assert kind == "lt"
    return {node: value < limit for node, value in last.items()}


def test_the_silent_rule_fires_for_a_node_quiet_for_an_hour_and_only_for_it(influxdb1, telemetry, swarm):
    rule = alert_rules()["tswarm-node-silent"]
    db, _, _ = telemetry
    assert evaluate(influxdb1, db, rule) == {"solar-1": False, "weak.2": False, "quiet_3": True, "seed-4": False}
    # The readings sent through the service: attic_3 last reported an hour ago.
    db, _, _ = swarm
    assert evaluate(influxdb1, db, rule) == {"kitchen-1": False, "cellar.2": False, SILENT.node: True}


def test_the_battery_rule_fires_below_the_threshold_for_the_latest_reading(influxdb1, telemetry, swarm):
    rule = alert_rules()["tswarm-battery-low"]
    db, _, _ = telemetry
    # quiet_3 was below 3.3 V before its latest reading; seed-4 sends no vbat and has no instance.
    assert evaluate(influxdb1, db, rule) == {"solar-1": False, "weak.2": True, "quiet_3": False}
    db, _, _ = swarm
    assert evaluate(influxdb1, db, rule) == {}  # no node sent a battery voltage: no instance (noDataState OK)
