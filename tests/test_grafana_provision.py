"""`tswarm grafana provision` against a recorded contract of Grafana's HTTP API.

No Grafana server can run on this machine, so this is a mock: a small aiohttp app on loopback that
implements exactly the endpoints grafana-client calls for us, with Grafana's status codes and
response shapes (api/datasources, api/folders, api/dashboards per Grafana's HTTP API reference;
api/v1/provisioning/alert-rules per its alerting provisioning API: an empty 404 for a missing rule,
201 with the stored rule, which gains Grafana's own id, orgID, updated and provenance), and records
every request. The real `tswarm` CLI runs as a subprocess against it. The dashboards' and the alert
rules' InfluxQL queries themselves run against the real InfluxDB 1.x in
tests/integration/test_grafana_queries.py. What is not Grafana (a login page, an app that answers 200
to everything) is a real HTTP server on loopback too, :class:`NotGrafana`.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tswarm import grafana_alerts, grafana_dashboards
from tswarm.grafana_provision import InfluxSource, ProvisionError, connect, datasource
from tswarm.grafana_provision import provision as provision_api
from tests.servers import free_port, run_cli, tswarm_env

ROOT = Path(__file__).resolve().parent.parent
ALERTING_FILE = ROOT / "grafana" / "provisioning" / "alerting" / "tswarm.yaml"

TOKEN = "glsa_test-token"
INFLUX = "http://influxdb:8086"


class FakeGrafana:
    """Grafana's API for datasources, folders and dashboards, in memory, recording each request."""

    def __init__(self):
        self.requests: list[tuple[str, str, object]] = []
        self.auth_headers: set[str] = set()
        self.datasources: dict[str, dict] = {}
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.alert_rules: dict[str, dict] = {}
        self.rule_provenance = "api"  # "file": the rules came from a provisioning file, the API may not change them
        self.port = free_port()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the contract ------------------------------------------------------------------------

    @web.middleware
    async def record(self, request: web.Request, handler):
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        self.auth_headers.add(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "invalid API key", "traceID": ""}, status=401)
        return await handler(request)

    async def get_datasource(self, request):
        uid = request.match_info["uid"]
        if uid not in self.datasources:
            return web.json_response({"message": "Data source not found"}, status=404)
        return web.json_response(self.datasources[uid])

    def _store_datasource(self, body: dict, ds_id: int) -> dict:
        stored = {k: v for k, v in body.items() if k != "secureJsonData"}
        stored.update(id=ds_id, orgId=1, basicAuth=False, isDefault=False, readOnly=False, version=1)
        stored.setdefault("user", "")
        stored.setdefault("database", "")
        stored.setdefault("jsonData", {})
        stored["secureJsonFields"] = {k: True for k in body.get("secureJsonData", {})}
        self.datasources[body["uid"]] = stored
        return stored

    async def create_datasource(self, request):
        body = await request.json()
        if any(d["name"] == body["name"] for d in self.datasources.values()):
            return web.json_response({"message": "data source with the same name already exists"}, status=409)
        stored = self._store_datasource(body, len(self.datasources) + 1)
        return web.json_response({"datasource": stored, "id": stored["id"], "message": "Datasource added", "name": body["name"]})

    async def update_datasource(self, request):
        uid = request.match_info["uid"]
        if uid not in self.datasources:
            return web.json_response({"message": "Data source not found"}, status=404)
        body = await request.json()
        stored = self._store_datasource(body, self.datasources[uid]["id"])
        return web.json_response({"datasource": stored, "id": stored["id"], "message": "Datasource updated", "name": body["name"]})

    async def get_folder(self, request):
        uid = request.match_info["uid"]
        if uid not in self.folders:
            return web.json_response({"message": "folder not found", "status": "not-found"}, status=404)
        return web.json_response(self.folders[uid])

    async def create_folder(self, request):
        body = await request.json()
        folder = {"id": len(self.folders) + 1, "uid": body["uid"], "title": body["title"],
                  "url": f"/dashboards/f/{body['uid']}/", "version": 1}
        self.folders[body["uid"]] = folder
        return web.json_response(folder)

    async def get_dashboard(self, request):
        uid = request.match_info["uid"]
        if uid not in self.dashboards:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(self.dashboards[uid])

    async def save_dashboard(self, request):
        body = await request.json()
        dashboard = dict(body["dashboard"])
        uid = dashboard["uid"]
        version = self.dashboards[uid]["dashboard"]["version"] + 1 if uid in self.dashboards else 1
        dashboard.update(id=len(self.dashboards) + 1, version=version)
        self.dashboards[uid] = {"dashboard": dashboard, "meta": {"folderUid": body.get("folderUid", ""), "slug": uid}}
        return web.json_response({"id": dashboard["id"], "uid": uid, "url": f"/d/{uid}/", "status": "success",
                                  "version": version, "slug": uid})

    async def get_alert_rule(self, request):
        uid = request.match_info["uid"]
        if uid not in self.alert_rules:
            return web.Response(status=404)  # Grafana: response.Empty(http.StatusNotFound)
        return web.json_response(self.alert_rules[uid])

    def _invalid_rule(self, body: dict):
        if body.get("folderUID") not in self.folders:
            return web.json_response({"message": "invalid alert rule: folder does not exist"}, status=400)
        if not body.get("ruleGroup") or not body.get("title"):
            return web.json_response({"message": "invalid alert rule: title and ruleGroup are required"}, status=400)
        if body.get("condition") not in {q["refId"] for q in body.get("data", [])}:
            return web.json_response({"message": "invalid alert rule: condition is not a refId of data"}, status=400)
        return None

    def _store_rule(self, body: dict, rule_id: int) -> dict:
        stored = json.loads(json.dumps(body))
        stored.update(id=rule_id, orgID=1, updated="2024-05-01T12:00:00Z", provenance="api")
        stored.setdefault("isPaused", False)
        stored.setdefault("annotations", {})
        stored.setdefault("labels", {})
        stored["notification_settings"] = None
        stored["record"] = None
        for query in stored["data"]:
            query.setdefault("queryType", "")
            query["model"].setdefault("intervalMs", 1000)  # Grafana's AlertQuery.PreSave
            query["model"].setdefault("maxDataPoints", 43200)
        self.alert_rules[body["uid"]] = stored
        return stored

    async def create_alert_rule(self, request):
        body = await request.json()
        if (invalid := self._invalid_rule(body)) is not None:
            return invalid
        if body.get("uid") in self.alert_rules:
            return web.json_response({"message": "a conflicting alert rule is found: rule uid must be unique"}, status=409)
        return web.json_response(self._store_rule(body, len(self.alert_rules) + 1), status=201)

    async def update_alert_rule(self, request):
        uid = request.match_info["uid"]
        if uid not in self.alert_rules:
            return web.Response(status=404)
        if self.rule_provenance != "api":
            message = f"cannot change provenance from '{self.rule_provenance}' to 'api'"
            return web.json_response({"message": message, "traceID": ""}, status=400)
        body = await request.json()
        if (invalid := self._invalid_rule(body)) is not None:
            return invalid
        return web.json_response(self._store_rule(body, self.alert_rules[uid]["id"]))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/api/datasources/uid/{uid}", self.get_datasource)
        app.router.add_post("/api/datasources", self.create_datasource)
        app.router.add_put("/api/datasources/uid/{uid}", self.update_datasource)
        app.router.add_get("/api/folders/{uid}", self.get_folder)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_get("/api/dashboards/uid/{uid}", self.get_dashboard)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
        app.router.add_get("/api/v1/provisioning/alert-rules/{uid}", self.get_alert_rule)
        app.router.add_post("/api/v1/provisioning/alert-rules", self.create_alert_rule)
        app.router.add_put("/api/v1/provisioning/alert-rules/{uid}", self.update_alert_rule)
        return app

    # -- running on loopback in a thread -------------------------------------------------------

    def _serve(self):
        async def main():
            runner = web.AppRunner(self.app())
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())
        self._loop.close()

    def __enter__(self):
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def take(self) -> list[tuple[str, str, object]]:
        taken, self.requests = self.requests, []
        return taken


@pytest.fixture
def grafana():
    with FakeGrafana() as fake:
        yield fake


@pytest.fixture
def env(tmp_path):
    return tswarm_env(tmp_path / "data", TSWARM_INFLUX_API="1", TSWARM_INFLUX_URL="http://localhost:9999")


def provision(tmp_path, env, url, *args, token=TOKEN, check=True):
    return run_cli(tmp_path / "data", "grafana", "provision", "--url", url, "--token", token,
                   "--influx-url", INFLUX, *args, env=env, check=check)


def writes(requests):
    return [r for r in requests if r[0] != "GET"]


def test_first_run_creates_datasource_folder_and_dashboards_with_these_exact_requests(tmp_path, env, grafana):
    proc = provision(tmp_path, env, grafana.url, "--influx-db", "swarm")
    overview, node = grafana_dashboards.overview(), grafana_dashboards.node()
    wanted_source = {
        "name": "tswarm InfluxQL", "uid": "tswarm-influxql", "type": "influxdb", "access": "proxy", "url": INFLUX,
        "jsonData": {"dbName": "swarm", "httpMode": "POST"},
    }
    silent, battery = grafana_alerts.rules()
    assert grafana.take() == [
        ("GET", "/api/datasources/uid/tswarm-influxql", None),
        ("POST", "/api/datasources", wanted_source),
        ("GET", "/api/folders/tswarm", None),
        ("POST", "/api/folders", {"title": "tswarm", "uid": "tswarm"}),
        ("GET", "/api/dashboards/uid/tswarm-overview", None),
        ("POST", "/api/dashboards/db",
         {"dashboard": overview, "folderUid": "tswarm", "overwrite": True, "message": "tswarm grafana provision"}),
        ("GET", "/api/dashboards/uid/tswarm-node", None),
        ("POST", "/api/dashboards/db",
         {"dashboard": node, "folderUid": "tswarm", "overwrite": True, "message": "tswarm grafana provision"}),
        ("GET", "/api/v1/provisioning/alert-rules/tswarm-node-silent", None),
        ("POST", "/api/v1/provisioning/alert-rules", silent),
        ("GET", "/api/v1/provisioning/alert-rules/tswarm-battery-low", None),
        ("POST", "/api/v1/provisioning/alert-rules", battery),
    ]
    assert grafana.auth_headers == {f"Bearer {TOKEN}"}
    assert proc.stdout == (
        "datasource 'tswarm InfluxQL': created\n"
        "folder 'tswarm': created\n"
        "dashboard 'tswarm overview': created\n"
        "dashboard 'tswarm node': created\n"
        "alert rule 'tswarm: node silent': created\n"
        "alert rule 'tswarm: battery low': created\n"
        "6 change(s)\n"
    )


def test_second_run_reads_only_and_changes_nothing(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    grafana.take()
    before = json.dumps([grafana.datasources, grafana.folders, grafana.dashboards, grafana.alert_rules], sort_keys=True)
    proc = provision(tmp_path, env, grafana.url)
    requests = grafana.take()
    assert writes(requests) == []
    assert [path for _, path, _ in requests] == [
        "/api/datasources/uid/tswarm-influxql", "/api/folders/tswarm",
        "/api/dashboards/uid/tswarm-overview", "/api/dashboards/uid/tswarm-node",
        "/api/v1/provisioning/alert-rules/tswarm-node-silent", "/api/v1/provisioning/alert-rules/tswarm-battery-low",
    ]
    assert json.dumps([grafana.datasources, grafana.folders, grafana.dashboards, grafana.alert_rules], sort_keys=True) == before
    assert proc.stdout.splitlines()[-1] == "Grafana already up to date"


def test_a_changed_influxdb_url_updates_only_the_datasource(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    grafana.take()
    run_cli(tmp_path / "data", "grafana", "provision", "--url", grafana.url, "--token", TOKEN,
            "--influx-url", "http://elsewhere:8086", env=env)
    (update,) = writes(grafana.take())
    assert update[:2] == ("PUT", "/api/datasources/uid/tswarm-influxql")
    assert update[2]["url"] == "http://elsewhere:8086"


def test_a_dashboard_edited_in_grafana_is_put_back(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    grafana.dashboards["tswarm-node"]["dashboard"]["title"] = "edited by hand"
    grafana.take()
    provision(tmp_path, env, grafana.url)
    (save,) = writes(grafana.take())
    assert save[:2] == ("POST", "/api/dashboards/db") and save[2]["dashboard"] == grafana_dashboards.node()
    assert grafana.dashboards["tswarm-node"]["dashboard"]["version"] == 2


def test_flux_on_influxdb2_sends_the_token_as_a_secret_and_the_flux_dashboards(tmp_path, grafana):
    env = tswarm_env(tmp_path / "data", TSWARM_INFLUX_API="2", TSWARM_INFLUX_TOKEN="influx-token",
                     TSWARM_INFLUX_ORG="home", TSWARM_INFLUX_BUCKET="climate")
    provision(tmp_path, env, grafana.url, "--flux")
    requests = grafana.take()
    assert requests[1] == ("POST", "/api/datasources", {
        "name": "tswarm Flux", "uid": "tswarm-flux", "type": "influxdb", "access": "proxy", "url": INFLUX,
        "jsonData": {"version": "Flux", "organization": "home", "defaultBucket": "climate"},
        "secureJsonData": {"token": "influx-token"},
    })
    saved = [body["dashboard"] for method, path, body in requests if path == "/api/dashboards/db"]
    assert saved == [grafana_dashboards.overview("flux", bucket="climate"), grafana_dashboards.node("flux", bucket="climate")]
    assert [v["query"] for v in saved[0]["templating"]["list"] if v["name"] == "bucket"] == ["climate"]
    rules = [body for method, path, body in requests if method == "POST" and path == "/api/v1/provisioning/alert-rules"]
    assert rules == grafana_alerts.rules("flux", bucket="climate")
    assert [q["datasourceUid"] for rule in rules for q in rule["data"] if q["refId"] == "A"] == ["tswarm-flux"] * 2
    assert all(rule["data"][0]["model"]["query"].startswith('from(bucket: "climate")') for rule in rules)
    # Grafana keeps the secret; the second run sees it stored and writes nothing.
    provision(tmp_path, env, grafana.url, "--flux")
    assert writes(grafana.take()) == []


def test_influxql_on_influxdb2_uses_the_v1_compatibility_endpoint_with_a_token_header():
    source = InfluxSource(url=INFLUX, api="2", bucket="climate", token="t0k")
    assert datasource(source) == {
        "name": "tswarm InfluxQL", "uid": "tswarm-influxql", "type": "influxdb", "access": "proxy", "url": INFLUX,
        "jsonData": {"dbName": "climate", "httpMode": "POST", "httpHeaderName1": "Authorization"},
        "secureJsonData": {"httpHeaderValue1": "Token t0k"},
    }


def test_wrong_token_is_a_one_line_error_and_nothing_is_written(tmp_path, env, grafana):
    proc = provision(tmp_path, env, grafana.url, token="wrong", check=False)
    assert proc.returncode == 1
    assert proc.stderr == f"Error: Grafana at {grafana.url} refused the token (401 Unauthorized): check --token\n"
    assert grafana.take() == [("GET", "/api/datasources/uid/tswarm-influxql", None)]


def test_unreachable_grafana_is_a_one_line_error(tmp_path, env):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = provision(tmp_path, env, url, check=False)
    assert proc.returncode == 1
    assert proc.stderr == f"Error: cannot reach Grafana at {url}: Connection refused\n"


class NotGrafana:
    """Something else at --url that answers 200 to every path with the same body (GETs with
    ``get_status``): the login page of an SSO proxy in front of Grafana, or an app that is not Grafana
    at all. A real HTTP server on loopback (http.server, in a thread); it records the requests it answered."""

    def __init__(self, content_type: str, body: bytes, get_status: int = 200):
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path))
                self.send_response(get_status if self.command == "GET" else 200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "NotGrafana":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


HINT = "is --url Grafana's own address, with no login page in front?"


@pytest.mark.parametrize("content_type, body, what", [
    ("text/html; charset=utf-8", b"<!doctype html><html><body>Sign in</body></html>", "an HTML page, not a JSON object"),
    ("text/plain", b"OK", "text, not a JSON object"),
    ("application/json", b"[]", "a JSON array, not a JSON object"),
    ("application/json", b"<html>Sign in</html>", "an answer that is not JSON"),
    ("application/json", b"", "an answer that is not JSON"),
], ids=["html", "text", "json-array", "html-said-json", "empty-said-json"])
def test_a_server_that_answers_200_but_not_as_grafana_is_a_one_line_error_and_nothing_is_written(
    tmp_path, env, content_type, body, what
):
    """The first answer, to the datasource's GET, is checked before any of its fields is read: one
    `Error:` line that says what came instead (no traceback of a str without .get, no bare "0" from
    the JSON parser's exception chain), and no write follows."""
    with NotGrafana(content_type, body) as server:
        proc = provision(tmp_path, env, server.url, check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"Error: Grafana at {server.url} did not answer as Grafana ({what}: {HINT})\n"
    assert server.requests == [("GET", "/api/datasources/uid/tswarm-influxql")]


def test_a_write_answered_with_a_page_is_a_one_line_error_too(tmp_path, env):
    """A server that answers a GET with 404 (taken as "no datasource yet") and the POST that follows
    with a page: that is no datasource created, and the error is the same one line."""
    with NotGrafana("text/html", b"<html>Sign in</html>", get_status=404) as server:
        proc = provision(tmp_path, env, server.url, check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"Error: Grafana at {server.url} did not answer as Grafana (an HTML page, not a JSON object: {HINT})\n"
    )
    assert server.requests == [("GET", "/api/datasources/uid/tswarm-influxql"), ("POST", "/api/datasources")]


@pytest.mark.parametrize("status, content_type, body, said", [
    (502, "text/html", b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body>\n</html>\n",
     "answered 502: an HTML page (502 Bad Gateway)"),
    (503, "text/plain", b"upstream connect error\nor disconnect/reset before headers\n",
     "answered 503: upstream connect error or disconnect/reset before headers"),
], ids=["502-page", "503-text"])
def test_an_error_page_instead_of_grafanas_json_is_one_line_that_says_what_came(tmp_path, env, status, content_type, body, said):
    """A proxy in front of a Grafana that is down: the status and the page's title or the text, on
    one line, not the whole page."""
    with NotGrafana(content_type, body, get_status=status) as server:
        proc = provision(tmp_path, env, server.url, check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"Error: Grafana at {server.url} {said}\n"


def test_a_token_without_the_admin_role_is_told_so(tmp_path, env):
    body = json.dumps({"accessErrorId": "ACE0", "title": "Access denied",
                       "message": "You'll need additional permissions to perform this action. Permissions needed: datasources:read"})
    with NotGrafana("application/json", body.encode(), get_status=403) as server:
        proc = provision(tmp_path, env, server.url, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: Grafana at {server.url} answered 403: You'll need additional permissions to perform this action."
        " Permissions needed: datasources:read (check that --token is of a service account with the Admin role)\n"
    )


def test_a_grafana_that_does_not_answer_is_one_line_after_the_timeout():
    with socket.socket() as listening:  # accepts connections (the kernel's backlog) and never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(ProvisionError) as raised:
            provision_api(connect(url, TOKEN, timeout=0.5), InfluxSource(url=INFLUX), report=lambda line: None)
    assert str(raised.value) == f"Grafana at {url} did not answer within 0.5 s"


def test_an_influx_url_that_is_not_http_is_refused_before_any_request(tmp_path, env, grafana):
    proc = run_cli(tmp_path / "data", "grafana", "provision", "--url", grafana.url, "--token", TOKEN,
                   "--influx-url", "localhost:8086", env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("Error: --influx-url must be InfluxDB's http(s) address as Grafana reaches it,"
                           " like http://influxdb:8086; got 'localhost:8086'\n")
    assert grafana.take() == []


def test_a_url_that_is_not_http_is_refused_before_any_request(tmp_path, env):
    proc = provision(tmp_path, env, "localhost:3000", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "--url must be Grafana's http(s) address" in proc.stderr


def test_flux_on_influxdb1_is_refused_before_any_request(tmp_path, env, grafana):
    proc = provision(tmp_path, env, grafana.url, "--flux", check=False)
    assert proc.returncode == 1
    assert proc.stderr == "Error: Flux needs InfluxDB 2.x: use --influx-api 2 (or drop --flux for InfluxQL)\n"
    assert grafana.take() == []


# -- alert rules ------------------------------------------------------------------------------------


def rule_writes(requests):
    return [(method, path) for method, path, _ in writes(requests) if "/alert-rules" in path]


def test_alert_rules_are_in_the_dashboards_folder_and_evaluate_every_node(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    stored = grafana.alert_rules
    assert sorted(stored) == ["tswarm-battery-low", "tswarm-node-silent"]
    assert {(r["folderUID"], r["ruleGroup"], r["provenance"]) for r in stored.values()} == {("tswarm", "tswarm", "api")}
    silent, battery = stored["tswarm-node-silent"], stored["tswarm-battery-low"]
    assert [q["datasourceUid"] for q in silent["data"]] == ["tswarm-influxql", "__expr__", "__expr__"]
    assert silent["data"][0]["relativeTimeRange"] == {"from": 30 * 86400, "to": 0}
    assert silent["data"][2]["model"]["conditions"] == [{"evaluator": {"params": [1], "type": "lt"}}]
    assert battery["data"][2]["model"]["conditions"] == [{"evaluator": {"params": [3.3], "type": "lt"}}]
    assert "$labels.node" in silent["annotations"]["summary"] and "$labels.node" in battery["annotations"]["summary"]


def test_an_alert_rule_changed_in_grafana_is_put_back_and_only_it(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    grafana.alert_rules["tswarm-battery-low"]["data"][2]["model"]["conditions"][0]["evaluator"]["params"] = [2.9]
    grafana.alert_rules["tswarm-node-silent"]["model_added_by_grafana"] = True  # keys of Grafana's own: not tswarm's
    grafana.alert_rules["tswarm-node-silent"]["data"][1]["model"]["datasource"] = {"type": "__expr__", "uid": "__expr__"}
    grafana.take()
    proc = provision(tmp_path, env, grafana.url)
    requests = grafana.take()
    assert rule_writes(requests) == [("PUT", "/api/v1/provisioning/alert-rules/tswarm-battery-low")]
    assert writes(requests)[0][2] == grafana_alerts.battery_rule()
    assert grafana.alert_rules["tswarm-battery-low"]["data"][2]["model"]["conditions"][0]["evaluator"]["params"] == [3.3]
    assert "alert rule 'tswarm: battery low': updated" in proc.stdout.splitlines()
    assert "alert rule 'tswarm: node silent': unchanged" in proc.stdout.splitlines()


def test_force_writes_every_object_again(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    grafana.take()
    proc = provision(tmp_path, env, grafana.url, "--force")
    assert [(method, path) for method, path, _ in writes(grafana.take())] == [
        ("PUT", "/api/datasources/uid/tswarm-influxql"),
        ("POST", "/api/dashboards/db"), ("POST", "/api/dashboards/db"),
        ("PUT", "/api/v1/provisioning/alert-rules/tswarm-node-silent"),
        ("PUT", "/api/v1/provisioning/alert-rules/tswarm-battery-low"),
    ]
    assert proc.stdout.splitlines()[-1] == "5 change(s)"


def test_another_battery_threshold_changes_the_battery_panels_and_rule_only(grafana):
    """In-process (``provision(..., battery_low_v=...)``): the CLI passes TSWARM_BATTERY_LOW_V (test below)."""
    source = InfluxSource(url=INFLUX)
    api = connect(grafana.url, TOKEN)
    provision_api(api, source, report=lambda line: None)
    grafana.take()
    changed = provision_api(api, source, report=lambda line: None, battery_low_v=3.6)
    assert changed == ["dashboard tswarm overview", "dashboard tswarm node", "alert rule tswarm: battery low"]
    (save_overview, save_node, put_rule) = writes(grafana.take())
    assert save_overview[2]["dashboard"] == grafana_dashboards.overview(battery_low_v=3.6)
    assert put_rule[2] == grafana_alerts.battery_rule(battery_low_v=3.6)
    assert put_rule[2]["data"][2]["model"]["conditions"][0]["evaluator"]["params"] == [3.6]
    (battery_panel,) = [p for p in save_overview[2]["dashboard"]["panels"] if p["title"] == "Battery"]
    assert [s["value"] for s in battery_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 3.6]


def test_the_command_takes_the_threshold_from_tswarm_battery_low_v(tmp_path, env, grafana):
    provision(tmp_path, {**env, "TSWARM_BATTERY_LOW_V": "3.45"}, grafana.url)
    rule = grafana.alert_rules["tswarm-battery-low"]
    assert rule["data"][2]["model"]["conditions"][0]["evaluator"]["params"] == [3.45]
    assert "3.45 V" in rule["annotations"]["description"]


def test_a_rule_grafana_refuses_is_a_one_line_error(tmp_path, env, grafana):
    """A rule file-provisioned under the same uid (docker-compose) cannot be changed through the API."""
    provision(tmp_path, env, grafana.url)
    grafana.alert_rules["tswarm-node-silent"]["title"] = "changed"
    grafana.rule_provenance = "file"
    proc = provision(tmp_path, env, grafana.url, check=False)
    assert proc.returncode == 1
    assert proc.stderr == f"Error: Grafana at {grafana.url} answered 400: cannot change provenance from 'file' to 'api'\n"


# -- grafana/provisioning/alerting/tswarm.yaml: the same rules for docker-compose ---------------------


def file_rule_as_api(rule: dict, group: dict) -> dict:
    """A rule of an alerting provisioning file as the API takes it (Grafana's AlertRuleV1.mapToModel):
    the group gives ruleGroup (and the folder, by title here, by uid through the API)."""
    return {**rule, "ruleGroup": group["name"]}


def test_the_alerting_file_holds_the_rules_provision_sends(tmp_path, grafana):
    """docker-compose's Grafana reads InfluxDB 2.x through the InfluxQL datasource: provision the same way."""
    env = tswarm_env(tmp_path / "data", TSWARM_INFLUX_API="2", TSWARM_INFLUX_TOKEN="t", TSWARM_INFLUX_BUCKET="tswarm")
    provision(tmp_path, env, grafana.url)
    sent = [body for method, path, body in grafana.take() if method == "POST" and path == "/api/v1/provisioning/alert-rules"]
    document = yaml.safe_load(ALERTING_FILE.read_text())
    assert document["apiVersion"] == 1
    (group,) = document["groups"]
    assert (group["orgId"], group["name"], group["interval"]) == (1, grafana_alerts.RULE_GROUP, "1m")
    # Grafana provisions alerting before dashboards and finds a group's folder by title: not "tswarm" (see the file).
    assert group["folder"] == "tswarm alerts"
    ignored = ("folderUID", "orgID")
    assert [file_rule_as_api(rule, group) for rule in group["rules"]] == [
        {k: v for k, v in rule.items() if k not in ignored} for rule in sent
    ]


def test_the_alerting_file_survives_grafanas_variable_expansion():
    """Grafana expands $VAR and ${VAR} in a file's strings (labels, titles, uids...), ${VAR} only in
    annotations (newer versions; none in older), and nothing in a query's model, where $timeFilter lives."""
    (group,) = yaml.safe_load(ALERTING_FILE.read_text())["groups"]

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for rule in group["rules"]:
        expanded = {k: v for k, v in rule.items() if k not in ("data", "annotations")}
        assert [s for s in strings(expanded) + strings(group["name"]) + strings(group["folder"]) if "$" in s] == []
        assert [s for s in strings(rule["annotations"]) if "${" in s] == []
        for query in rule["data"]:
            assert [s for s in strings({k: v for k, v in query.items() if k != "model"}) if "$" in s] == []
