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
    overview = ["Temperature", "Humidity", "Last seen", "Nodes gone silent"]
    node = ["Temperature now", "Humidity now", "Last seen", "Readings in range", "Temperature", "Humidity"]
    assert titles == {
        "influxql/overview.json": overview, "influxql/node.json": node,
        "flux/overview.json": overview, "flux/node.json": node,
    }
    assert {path: d["uid"] for path, d in dashboards.items()} == {
        "influxql/overview.json": "tswarm-overview", "influxql/node.json": "tswarm-node",
        "flux/overview.json": "tswarm-overview-flux", "flux/node.json": "tswarm-node-flux",
    }


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
