"""The dashboards in grafana/ are what service/grafana_dashboards.py generates, and fit the provisioning YAML."""
from __future__ import annotations

from pathlib import Path

import yaml

from tswarm import grafana_dashboards as gd

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"


def checked_in() -> dict[str, str]:
    base = GRAFANA / "dashboards"
    return {str(p.relative_to(base)): p.read_text() for p in sorted(base.rglob("*.json"))}


def test_checked_in_dashboards_equal_the_generator_output():
    generated = {path: gd.dump(dashboard) for path, dashboard in gd.dashboards().items()}
    assert checked_in() == generated, "grafana/dashboards is stale: run `make grafana` and commit the result"


def panels(dashboard):
    return dashboard["panels"]


def test_overview_and_node_dashboards_in_both_languages():
    dashboards = gd.dashboards()
    titles = {path: [p["title"] for p in panels(d)] for path, d in dashboards.items()}
    overview = ["Temperature", "Humidity", "Battery", "Signal", "Last seen", "Nodes gone silent"]
    node = ["Temperature now", "Humidity now", "Last seen", "Readings in range", "Temperature", "Humidity", "Battery", "Signal"]
    assert titles == {
        "influxql/overview.json": overview, "influxql/node.json": node,
        "flux/overview.json": overview, "flux/node.json": node,
    }
    assert {path: d["uid"] for path, d in dashboards.items()} == {
        "influxql/overview.json": "tswarm-overview", "influxql/node.json": "tswarm-node",
        "flux/overview.json": "tswarm-overview-flux", "flux/node.json": "tswarm-node-flux",
    }


def test_battery_and_signal_panels_in_volts_and_dbm_with_the_low_battery_line():
    for path, dashboard in gd.dashboards().items():
        by_title = {p["title"]: p for p in panels(dashboard)}
        battery, signal = by_title["Battery"], by_title["Signal"]
        assert (battery["type"], signal["type"]) == ("timeseries", "timeseries"), path
        assert battery["fieldConfig"]["defaults"]["unit"] == "volt" and signal["fieldConfig"]["defaults"]["unit"] == "dBm"
        # The files show TSWARM_BATTERY_LOW_V's default; a dashed line at the threshold, red below it.
        assert battery["fieldConfig"]["defaults"]["thresholds"] == {
            "mode": "absolute", "steps": [{"value": None, "color": "red"}, {"value": 3.3, "color": "green"}],
        }
        assert battery["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "dashed"}
        assert "thresholds" not in signal["fieldConfig"]["defaults"]
        (query,) = [t["query"] for t in battery["targets"]]
        assert ('mean("vbat")' if path.startswith("influxql/") else 'r._field == "vbat"') in query
        (query,) = [t["query"] for t in signal["targets"]]
        assert ('mean("rssi")' if path.startswith("influxql/") else 'r._field == "rssi"') in query


def test_the_battery_threshold_is_a_parameter():
    for build in (gd.overview, gd.node):
        (battery,) = [p for p in panels(build("influxql", battery_low_v=3.55)) if p["title"] == "Battery"]
        assert [s["value"] for s in battery["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 3.55]
        assert "3.55 V" in battery["description"]


def test_each_language_queries_only_its_own_datasource():
    for path, dashboard in gd.dashboards().items():
        uid = gd.INFLUXQL_UID if path.startswith("influxql/") else gd.FLUX_UID
        refs = [p["datasource"]["uid"] for p in panels(dashboard)]
        refs += [t["datasource"]["uid"] for p in panels(dashboard) for t in p["targets"]]
        refs += [v["datasource"]["uid"] for v in dashboard["templating"].get("list", []) if "datasource" in v]
        assert set(refs) == {uid}, path


def test_flux_queries_read_the_bucket_variable_and_grafana_time_range():
    for name in ("overview", "node"):
        dashboard = gd.dashboards()[f"flux/{name}.json"]
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["bucket"]["type"] == "constant" and variables["bucket"]["query"] == "tswarm"
        for panel in panels(dashboard):
            for target in panel["targets"]:
                query = target["query"]
                assert query.startswith('from(bucket: "${bucket}")'), query
                assert '_measurement == "climate"' in query
                assert "range(start: v.timeRangeStart, stop: v.timeRangeStop)" in query or "range(start: -30d)" in query
                if name == "node":
                    assert 'r.node == "${node}"' in query


def test_node_dashboard_has_the_node_variable():
    for lang in gd.LANGUAGES:
        variables = {v["name"]: v for v in gd.node(lang)["templating"]["list"]}
        assert variables["node"]["type"] == "query" and variables["node"]["label"] == "Node"
        for panel in panels(gd.node(lang)):
            for target in panel["targets"]:
                assert "$node" in target["query"] or "${node}" in target["query"], (lang, panel["title"])


def test_provisioned_datasources_are_the_ones_the_dashboards_use():
    compose_sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "tswarm.yaml").read_text())
    assert {d["uid"]: d["jsonData"].get("version", "InfluxQL") for d in compose_sources["datasources"]} == {
        gd.INFLUXQL_UID: "InfluxQL", gd.FLUX_UID: "Flux",
    }
    influx1 = yaml.safe_load((GRAFANA / "influxdb1" / "datasources.yaml").read_text())
    assert [(d["uid"], d["type"], d["jsonData"]["dbName"]) for d in influx1["datasources"]] == [
        (gd.INFLUXQL_UID, "influxdb", "tswarm")
    ]


def test_dashboard_providers_point_at_each_language_folder():
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tswarm.yaml").read_text())["providers"]
    assert {p["options"]["path"]: p["folderUid"] for p in providers} == {
        "/etc/grafana/dashboards/tswarm/influxql": "tswarm",
        "/etc/grafana/dashboards/tswarm/flux": "tswarm-flux",
    }
    assert {str(p.parent.relative_to(GRAFANA / "dashboards")) for p in (GRAFANA / "dashboards").rglob("*.json")} == {
        "influxql", "flux",
    }
