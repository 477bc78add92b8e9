"""`tswarm grafana provision` against a recorded contract of Grafana's HTTP API.

No Grafana server can run on this machine, so this is a mock: a small aiohttp app on loopback that
implements exactly the endpoints grafana-client calls for us, with Grafana's status codes and
response shapes (api/datasources, api/folders, api/dashboards per Grafana's HTTP API reference),
and records every request. The real `tswarm` CLI runs as a subprocess against it. The dashboards'
queries themselves run against the real InfluxDB 1.x in tests/integration/test_grafana_queries.py.
"""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import web

from tswarm import grafana_dashboards
from tswarm.grafana_provision import InfluxSource, datasource
from tests.servers import free_port, run_cli, tswarm_env

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

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/api/datasources/uid/{uid}", self.get_datasource)
        app.router.add_post("/api/datasources", self.create_datasource)
        app.router.add_put("/api/datasources/uid/{uid}", self.update_datasource)
        app.router.add_get("/api/folders/{uid}", self.get_folder)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_get("/api/dashboards/uid/{uid}", self.get_dashboard)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
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
    ]
    assert grafana.auth_headers == {f"Bearer {TOKEN}"}
    assert proc.stdout == (
        "datasource 'tswarm InfluxQL': created\n"
        "folder 'tswarm': created\n"
        "dashboard 'tswarm overview': created\n"
        "dashboard 'tswarm node': created\n"
        "4 change(s)\n"
    )


def test_second_run_reads_only_and_changes_nothing(tmp_path, env, grafana):
    provision(tmp_path, env, grafana.url)
    grafana.take()
    before = json.dumps([grafana.datasources, grafana.folders, grafana.dashboards], sort_keys=True)
    proc = provision(tmp_path, env, grafana.url)
    requests = grafana.take()
    assert writes(requests) == []
    assert [path for _, path, _ in requests] == [
        "/api/datasources/uid/tswarm-influxql", "/api/folders/tswarm",
        "/api/dashboards/uid/tswarm-overview", "/api/dashboards/uid/tswarm-node",
    ]
    assert json.dumps([grafana.datasources, grafana.folders, grafana.dashboards], sort_keys=True) == before
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


def test_a_url_that_is_not_http_is_refused_before_any_request(tmp_path, env):
    proc = provision(tmp_path, env, "localhost:3000", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "--url must be Grafana's http(s) address" in proc.stderr


def test_flux_on_influxdb1_is_refused_before_any_request(tmp_path, env, grafana):
    proc = provision(tmp_path, env, grafana.url, "--flux", check=False)
    assert proc.returncode == 1
    assert proc.stderr == "Error: Flux needs InfluxDB 2.x: use --influx-api 2 (or drop --flux for InfluxQL)\n"
    assert grafana.take() == []
