"""docker-compose.yml, the Dockerfile and the Procfile, checked without Docker (no engine runs here).

docker-compose.yml validates against the Compose spec's own JSON schema (a copy in
tests/schemas/, Apache-2.0, source in its NOTICE.md); every TSWARM_* variable it sets is one
the service reads.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tswarm.settings import SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates_against_the_compose_spec():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(COMPOSE)


def test_the_schema_catches_a_broken_compose_file():
    """The validation above can fail: a misspelt key is refused."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["tswarm"]["helthcheck"] = broken["services"]["tswarm"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in COMPOSE["services"][service]["environment"].items()}


@pytest.mark.parametrize("service", ["tswarm", "grafana"])
def test_every_tswarm_variable_is_a_setting(service):
    names = [name for name in environment(service) if name.startswith("TSWARM_")]
    assert names, service
    assert [n for n in names if n not in SETTINGS_BY_NAME] == []


def test_dockerfile_sets_only_known_settings():
    text = (ROOT / "Dockerfile").read_text()
    names = set(re.findall(r"\b(TSWARM_[A-Z_]+)=", text))
    assert names == {"TSWARM_DATA_DIR", "TSWARM_HOST", "TSWARM_PORT"}
    assert names <= set(SETTINGS_BY_NAME)
    assert "FROM python:3.11-slim" in text and 'CMD ["tswarm", "serve"]' in text


def test_the_service_stores_in_influxdb2_and_grafana_reads_the_same_bucket():
    tswarm, grafana = environment("tswarm"), environment("grafana")
    assert tswarm["TSWARM_STORE"] == "influxdb" and tswarm["TSWARM_INFLUX_API"] == "2"
    influx = environment("influxdb")
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key, init in (("TSWARM_INFLUX_ORG", "DOCKER_INFLUXDB_INIT_ORG"), ("TSWARM_INFLUX_BUCKET", "DOCKER_INFLUXDB_INIT_BUCKET")):
        assert tswarm[key] == grafana[key] == influx[init]
    assert tswarm["TSWARM_INFLUX_TOKEN"] == grafana["TSWARM_INFLUX_TOKEN"] == "${INFLUXDB_TOKEN}"
    assert influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith("${INFLUXDB_TOKEN")
    assert tswarm["TSWARM_INFLUX_URL"] == grafana["TSWARM_INFLUX_URL"] == "http://influxdb:8086"
    assert COMPOSE["services"]["tswarm"]["build"] == "."


def test_named_volumes_and_health_checks():
    services = COMPOSE["services"]
    assert set(services) == {"influxdb", "grafana", "tswarm"}
    assert set(COMPOSE["volumes"]) == {"influxdb-data", "influxdb-config", "grafana-data", "tswarm-data"}
    assert "tswarm-data:/data" in services["tswarm"]["volumes"]
    assert environment("tswarm")["TSWARM_DATA_DIR"] == "/data"
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["tswarm"]["healthcheck"]["test"])
    for name in ("grafana", "tswarm"):
        assert services[name]["depends_on"]["influxdb"]["condition"] == "service_healthy"


def test_grafana_mounts_the_provisioning_and_the_generated_dashboards():
    volumes = COMPOSE["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert "./grafana/dashboards:/etc/grafana/dashboards/tswarm:ro" in volumes
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/tswarm.yaml").read_text())["providers"]
    for provider in providers:
        inside = Path(provider["options"]["path"]).relative_to("/etc/grafana/dashboards/tswarm")
        assert list((ROOT / "grafana/dashboards" / inside).glob("*.json")), provider["name"]
    home = environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana/dashboards" / Path(home).relative_to("/etc/grafana/dashboards/tswarm")).is_file()
    # Grafana's provisioning reads ${TSWARM_INFLUX_*} from Grafana's environment: each one is set there.
    used = set(re.findall(r"\$\{(\w+)\}", (ROOT / "grafana/provisioning/datasources/tswarm.yaml").read_text()))
    assert used and used <= set(environment("grafana"))


def test_env_example_defines_every_variable_compose_requires():
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    defined = {line.split("=", 1)[0] for line in (ROOT / "deploy/env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required and required <= defined


def test_procfile_runs_serve_on_all_interfaces_and_port_comes_from_the_environment():
    assert (ROOT / "Procfile").read_text() == "web: tswarm serve --host 0.0.0.0\n"


def grafana_file(path: str):
    return yaml.safe_load((ROOT / "grafana" / path).read_text())


def test_deployment_names_every_grafana_folder_compose_provisions():
    """docs/deployment.md says where Grafana puts what docker-compose provisions: the dashboards'
    folders and the alert rules' folder."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    compose_part = text[text.index("## One box with docker-compose"):text.index("\n## ", text.index("## One box"))]
    folders = [p["folder"] for p in grafana_file("provisioning/dashboards/tswarm.yaml")["providers"]]
    folders += [g["folder"] for g in grafana_file("provisioning/alerting/tswarm.yaml")["groups"]]
    assert [f for f in folders if f'"{f}"' not in compose_part] == []


def test_provisioned_datasources_are_what_tswarm_grafana_provision_sends():
    """The datasource files, filled in from Grafana's environment in docker-compose.yml (and the 1.x
    file as it is), are the datasources `tswarm grafana provision` creates for the same InfluxDB."""
    from tswarm.grafana_provision import InfluxSource, datasource

    env = environment("grafana")
    text = (ROOT / "grafana/provisioning/datasources/tswarm.yaml").read_text()
    files = {d.pop("uid"): d for d in yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text))["datasources"]}
    for flux in (False, True):
        wanted = datasource(InfluxSource(url=env["TSWARM_INFLUX_URL"], api="2", bucket=env["TSWARM_INFLUX_BUCKET"],
                                         token=env["TSWARM_INFLUX_TOKEN"], org=env["TSWARM_INFLUX_ORG"], flux=flux))
        uid = wanted.pop("uid")
        assert {k: v for k, v in files[uid].items() if k != "isDefault"} == wanted
    (influx1,) = grafana_file("influxdb1/datasources.yaml")["datasources"]
    wanted = datasource(InfluxSource(url=influx1["url"], api="1", db=influx1["jsonData"]["dbName"]))
    assert {k: v for k, v in influx1.items() if k != "isDefault"} == wanted
