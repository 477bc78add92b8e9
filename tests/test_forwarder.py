"""The forwarder (service/forwarder.py): retry, backoff, Retry-After and rejection logic, and the journal side
of forwarding. Pruning forwarded readings: tests/test_retention.py.

Why a stand-in InfluxDB here: no real InfluxDB can be made to answer 429 or 503 with a chosen
``Retry-After``, or a 413, on demand. So these tests use a small aiohttp server that answers what each
test scripts and records what it received. Everything a real server does (InfluxDB 1.6 and
VictoriaMetrics) is tested against it: a refused point and a missing database in
tests/integration/test_forwarder.py, the whole service in tests/integration/test_influx.py.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
from email.utils import formatdate

import pytest
from aiohttp import web

from tswarm.forwarder import Delivery, backoff_delay
from tswarm.keys import LEADER
from tswarm.store_status import store_status
from tswarm.influx.lines import line_protocol
from tswarm.influx.write import NOT_INFLUXDB, V1Target, V2Target, WriteError, parse_retry_after
from tswarm.storage import OutboxReading, ReadingExtra, storage_for
from tests.conftest import add_readings, register, test_config, wait_health

pytestmark = pytest.mark.engines

# -- a stand-in InfluxDB ----------------------------------------------------------------------


class FakeInflux:
    """Answers each write with the next scripted ``(status, headers, body)``, then 204; records bodies."""

    def __init__(self):
        self.script: list[tuple[int, dict, str]] = []
        self.bodies: list[str] = []  # every write received, decompressed
        self.accepted: list[str] = []  # lines of the writes answered 204
        self.auth: set[str] = set()  # the Authorization headers received

    async def write(self, request: web.Request) -> web.Response:
        self.auth.add(request.headers.get("Authorization", ""))
        raw = await request.read()
        assert request.headers.get("Content-Encoding") == "gzip"
        body = gzip.decompress(raw).decode()
        self.bodies.append(body)
        if self.script:
            status, headers, text = self.script.pop(0)
            return web.Response(status=status, headers=headers, text=text)
        self.accepted.extend(body.split("\n"))
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application(handler_args={"auto_decompress": False})  # to see the gzip bytes as sent
        app.router.add_post("/write", self.write)
        app.router.add_post("/api/v2/write", self.write)
        return app


@pytest.fixture
async def fake(aiohttp_server):
    influx = FakeInflux()
    server = await aiohttp_server(influx.app())
    influx.url = str(server.make_url("")).rstrip("/")
    return influx


class Sleeps(list):
    """A stand-in for asyncio.sleep that records the delays and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if len(self) > 50:
            raise AssertionError(f"retrying for ever: {self[:5]}...")


def readings(*nodes: str) -> list[OutboxReading]:
    return [OutboxReading(i + 1, node, 1_795_000_000_000_000_000 + i, 20.5 + i, 40.0 + i) for i, node in enumerate(nodes)]


# -- backoff ----------------------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_up_to_the_cap_without_jitter():
    assert [backoff_delay(n, 10, rand=lambda: 0) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_backoff_jitter_takes_at_most_half_off():
    assert backoff_delay(3, 60, rand=lambda: 1.0) == 2.0
    assert backoff_delay(100, 60, rand=lambda: 0.5) == 45.0


def test_retry_after_wins_over_backoff_and_is_capped_at_an_hour():
    assert backoff_delay(5, 60, retry_after=7) == 7
    assert backoff_delay(0, 1, retry_after=120) == 120
    assert backoff_delay(0, 60, retry_after=10**6) == 3600


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert parse_retry_after("30") == 30
    assert parse_retry_after(formatdate(1000 + 42, usegmt=True), now=1000) == 42
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


# -- one batch's way to InfluxDB --------------------------------------------------------------


async def test_503_and_429_are_retried_after_their_retry_after_and_5xx_with_backoff(fake):
    fake.script = [
        (503, {"Retry-After": "7"}, "overloaded"),
        (429, {"Retry-After": "3"}, "slow down"),
        (500, {}, "oops"),
        (500, {}, "oops"),
    ]
    sleeps = Sleeps()
    target = V1Target(fake.url, "tswarm")
    try:
        delivery = Delivery(target, max_backoff=60, sleep=sleeps)
        batch = readings("kitchen", "cellar")
        assert await delivery.deliver(batch) == []
    finally:
        await target.close()
    assert sleeps[:2] == [7, 3]
    assert 1 <= sleeps[2] <= 2 and 2 <= sleeps[3] <= 4  # no Retry-After: backoff of the 3rd and 4th retry
    assert len(fake.bodies) == 5 and len(set(fake.bodies)) == 1  # the same batch each time
    assert fake.accepted == [
        "climate,node=kitchen humidity=40,temperature=20.5 1795000000000000000",
        "climate,node=cellar humidity=41,temperature=21.5 1795000000000000001",
    ]


async def test_v2_api_honours_retry_after_too(fake):
    fake.script = [(429, {"Retry-After": "3"}, '{"code":"too many requests","message":"slow down"}')]
    sleeps, errors = Sleeps(), []

    async def on_error(message):
        errors.append(message)

    target = V2Target(fake.url, token="t", org="o", bucket="b")
    try:
        assert await Delivery(target, 60, sleep=sleeps, on_error=on_error).deliver(readings("kitchen")) == []
    finally:
        await target.close()
    assert sleeps == [3]
    assert errors == ["HTTP 429: slow down"]
    assert fake.accepted == ["climate,node=kitchen humidity=40,temperature=20.5 1795000000000000000"]


async def test_413_splits_the_batch(fake):
    fake.script = [(413, {}, "too large")]
    batch = readings("a", "b", "c", "d")
    target = V1Target(fake.url, "tswarm")
    try:
        assert await Delivery(target, 60, sleep=Sleeps()).deliver(batch) == []
    finally:
        await target.close()
    assert len(fake.bodies) == 3
    assert fake.accepted == line_protocol(batch).decode().split("\n")


async def test_connection_refused_is_a_write_error_to_retry(unused_tcp_port):
    target = V1Target(f"http://127.0.0.1:{unused_tcp_port}", "tswarm")
    try:
        with pytest.raises(WriteError):
            await target.write(target.prepare(line_protocol(readings("a"))), 1)
    finally:
        await target.close()


# -- answers that are not InfluxDB's, and errors on one line ----------------------------------------

PAGE = "<html>\n<head><title>Sign in</title></head>\n<body>\n<form></form>\n</body>\n</html>\n"
CREDENTIALS = {"1": "TSWARM_INFLUX_USER and TSWARM_INFLUX_PASSWORD", "2": "TSWARM_INFLUX_TOKEN, and that it may write to the bucket"}


def make_target(api: str, url: str, **kwargs):
    return V1Target(url, "tswarm", **kwargs) if api == "1" else V2Target(url, "t", "o", "b", **kwargs)


async def deliver_recording(target, batch) -> tuple[list, Sleeps, list[str]]:
    """``Delivery.deliver(batch)`` with the delays and the error messages it went through."""
    sleeps, errors = Sleeps(), []

    async def on_error(message):
        errors.append(message)

    try:
        rejected = await Delivery(target, 60, sleep=sleeps, on_error=on_error).deliver(batch)
    finally:
        await target.close()
    return rejected, sleeps, errors


@pytest.mark.parametrize("api", ["1", "2"])
async def test_a_200_page_at_the_url_is_not_taken_for_a_write(fake, api):
    """InfluxDB answers a write it took with 204. A 200 (a login page, an app that answers every path)
    is another server at TSWARM_INFLUX_URL: the batch waits, as for an InfluxDB that is down."""
    fake.script = [(200, {}, PAGE)]
    rejected, sleeps, errors = await deliver_recording(make_target(api, fake.url), readings("kitchen"))
    assert rejected == [] and len(sleeps) == 1 and len(fake.bodies) == 2
    assert fake.accepted == ["climate,node=kitchen humidity=40,temperature=20.5 1795000000000000000"]
    assert errors[0].endswith(f"({NOT_INFLUXDB})")


@pytest.mark.parametrize("api", ["1", "2"])
@pytest.mark.parametrize("status, body", [
    (400, PAGE), (400, "unsupported path requested: \"/tsdb/write\"\n"), (422, ""),
], ids=["page", "text", "empty"])
async def test_a_400_that_is_not_influxdbs_json_error_is_retried_not_recorded_as_refused(fake, api, status, body):
    """Only InfluxDB's own JSON error refuses points for good; a proxy's or another server's 400 (the
    wrong port or path) would otherwise have every reading split out and recorded as rejected."""
    fake.script = [(status, {}, body)] * 3
    batch = readings("a", "b", "c", "d")
    rejected, sleeps, errors = await deliver_recording(make_target(api, fake.url), batch)
    assert rejected == [] and len(sleeps) == 3
    assert len(fake.bodies) == 4 and len(set(fake.bodies)) == 1  # the whole batch each time, never split
    assert fake.accepted == line_protocol(batch).decode().split("\n")
    assert all(e.startswith(f"HTTP {status}") and e.endswith(f"({NOT_INFLUXDB})") for e in errors), errors


@pytest.mark.parametrize("api", ["1", "2"])
async def test_error_messages_are_one_line_whatever_the_answer(fake, api):
    nginx = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body>\n</html>\n"
    fake.script = [
        (502, {"Content-Type": "text/html"}, nginx),
        (503, {}, "upstream connect error\nor disconnect/reset before headers\n"),
        (500, {}, ""),
        (401, {"Content-Type": "application/json"}, '{"code":"unauthorized","message":"unauthorized access"}'),
    ]
    rejected, _, errors = await deliver_recording(make_target(api, fake.url), readings("kitchen"))
    assert rejected == [] and len(fake.accepted) == 1
    assert errors == [
        "HTTP 502: an HTML page (502 Bad Gateway)",
        "HTTP 503: upstream connect error or disconnect/reset before headers",
        "HTTP 500: Internal Server Error",
        f"HTTP 401: unauthorized access (check {CREDENTIALS[api]})",
    ]


@pytest.mark.parametrize("api", ["1", "2"])
async def test_no_answer_in_time_and_an_answer_that_is_not_http_are_one_line_write_errors(api):
    async def silent(reader, writer):
        await reader.read()  # until the client gives up and closes
        writer.close()

    async def not_http(reader, writer):
        await reader.read(1)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    for handler, expected in (
        (silent, "no answer within 0.5 s (TimeoutError)"),
        (not_http, f"ClientResponseError: Bad status line ({NOT_INFLUXDB})"),
    ):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        target = make_target(api, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout_s=0.5)
        try:
            with pytest.raises(WriteError) as raised:
                await target.write(target.prepare(line_protocol(readings("a"))), 1)
        finally:
            await target.close()
            server.close()
        assert str(raised.value) == expected


@pytest.mark.integration
@pytest.mark.engines("sqlite")  # no journal: one engine is enough
@pytest.mark.parametrize("api", ["1", "2"])
async def test_victoria_metrics_at_a_wrong_path_is_a_write_error_not_points_refused(victoria_metrics, api):
    """The real VictoriaMetrics answers a path it does not serve with 400 and plain text."""
    target = make_target(api, victoria_metrics.url + "/tsdb")
    try:
        with pytest.raises(WriteError) as raised:
            await target.write(target.prepare(line_protocol(readings("a"))), 1)
    finally:
        await target.close()
    assert str(raised.value).startswith("HTTP 400: ") and str(raised.value).endswith(f"({NOT_INFLUXDB})")
    assert "unsupported path requested" in str(raised.value)


@pytest.mark.integration
@pytest.mark.engines("sqlite")
async def test_the_v2_api_against_influxdb_1_6_says_to_check_the_api(influxdb1):
    """TSWARM_INFLUX_API=2 (the default) at Debian's InfluxDB 1.6, which has no /api/v2/write."""
    target = make_target("2", influxdb1.url)
    try:
        with pytest.raises(WriteError) as raised:
            await target.write(target.prepare(line_protocol(readings("a"))), 1)
    finally:
        await target.close()
    assert str(raised.value) == f"HTTP 404: 404 page not found ({NOT_INFLUXDB})"


# -- the forwarder inside the app ---------------------------------------------------------------


def basic_auth(name: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{name}:secret-pw".encode()).decode()


async def send(client, name, data):
    resp = await client.post(f"/api/nodes/{name}", json={"name": name, "data": data}, headers={"Authorization": basic_auth(name)})
    return resp.status


async def test_forwarder_drains_the_journal_and_healthz_shows_the_backlog(aiohttp_client, tmp_path, fake):
    config = test_config(tmp_path, store="influxdb", influx_api="1", influx_url=fake.url, forward_max_backoff=1)
    with storage_for(config) as journal:
        register(journal, "kitchen", created=True)
    fake.script = [(503, {"Retry-After": "0"}, "starting")] * 3
    client = await aiohttp_client(_app(config))
    assert [await send(client, "kitchen", f"2{i} 4{i}") for i in range(3)] == [202] * 3
    health = await wait_health(client, lambda h: h["backlog"] == 0 and h["in_flight"] == 0)
    assert health["last_error"] is None and health["rejected"] == 0 and health["store"] == "influxdb"
    with storage_for(config) as journal:
        expected = line_protocol(journal.outbox_readings(0, 10)).decode().split("\n")
        assert journal.forward_cursor() == 3
    assert fake.accepted == expected


async def test_the_forwarder_sends_each_readings_telemetry_and_a_split_batch_keeps_it(aiohttp_client, tmp_path, fake):
    """A 413 splits the batch the forwarder read (rows with the telemetry): the halves carry it too.
    The readings are in the journal before the service starts, so they make one batch."""
    config = test_config(tmp_path, store="influxdb", influx_api="1", influx_url=fake.url, forward_max_backoff=1)
    with storage_for(config) as journal:
        register(journal, "kitchen", created=True)
        journal.add_readings([
            ("kitchen", 1_000, 20.0, 40.0, ReadingExtra(vbat=3.92, rssi=-58, awake_ms=812)),
            ("kitchen", 1_001, 21.0, 41.0),
            ("kitchen", 1_002, 22.0, 42.0, ReadingExtra(rssi=-71, lost=2)),
            ("kitchen", 900, 23.0, 43.0, ReadingExtra(vbat=3.05)),  # kept: an older time, a newer id
        ])
    fake.script = [(413, {}, "too large")]
    client = await aiohttp_client(_app(config))
    await wait_health(client, lambda h: h["backlog"] == 0 and h["in_flight"] == 0)
    assert len(fake.bodies) == 3  # refused whole, then in halves
    assert fake.accepted == [
        "climate,node=kitchen awake_ms=812i,humidity=40,rssi=-58i,temperature=20,vbat=3.92 1000",
        "climate,node=kitchen humidity=41,temperature=21 1001",
        "climate,node=kitchen humidity=42,lost=2i,rssi=-71i,temperature=22 1002",
        "climate,node=kitchen humidity=43,temperature=23,vbat=3.05 900",
    ]


async def test_healthz_shows_the_last_error_while_influxdb_fails(aiohttp_client, tmp_path, fake):
    config = test_config(tmp_path, store="influxdb", influx_api="1", influx_url=fake.url)
    with storage_for(config) as journal:
        register(journal, "kitchen", created=True)
    fake.script = [(503, {"Retry-After": "3600"}, "maintenance")]
    client = await aiohttp_client(_app(config))
    assert await send(client, "kitchen", "20 40") == 202
    health = await wait_health(client, lambda h: h["last_error"] is not None)
    assert health["backlog"] == 1 and health["in_flight"] == 1
    assert health["last_error"]["message"] == "HTTP 503: maintenance"
    with storage_for(config) as journal:  # the same, as `tswarm status` sees it
        status = store_status(journal, config)
    assert status["backlog"] == 1 and status["last_error"]["message"] == "HTTP 503: maintenance"


async def test_credentials_in_the_influx_url_are_used_and_never_shown(aiohttp_client, tmp_path, fake, caplog):
    """TSWARM_INFLUX_URL=http://user:password@host:8086: the v1 API's user and password, kept out of
    the log, /healthz and `tswarm status` (and no "cannot combine" error beside TSWARM_INFLUX_USER)."""
    url = fake.url.replace("http://", "http://tswarm:s3cret%40pw@")
    config = test_config(tmp_path, store="influxdb", influx_api="1", influx_url=url, forward_max_backoff=1)
    with storage_for(config) as journal:
        register(journal, "kitchen", created=True)
    fake.script = [(503, {"Retry-After": "0"}, "starting")]
    client = await aiohttp_client(_app(config))
    assert await send(client, "kitchen", "20 40") == 202
    health = await wait_health(client, lambda h: h["backlog"] == 0 and h["in_flight"] == 0)
    assert health["influxdb"] == f"v1 API at {fake.url}, database 'tswarm'"
    assert fake.auth == {"Basic " + base64.b64encode(b"tswarm:s3cret@pw").decode()}
    assert f"to InfluxDB v1 API at {fake.url}, database 'tswarm' failed" in caplog.text and "s3cret" not in caplog.text
    with storage_for(config) as journal:
        assert "s3cret" not in json.dumps(store_status(journal, config))


async def test_store_sqlite_starts_no_forwarder(make_client):
    client = await make_client()
    assert "forwarder" not in client.app[LEADER].running
    health = await (await client.get("/healthz")).json()
    assert {k: health[k] for k in ("ok", "store", "backlog", "oldest_age_s", "last_error")} == {
        "ok": True, "store": "sqlite", "backlog": 0, "oldest_age_s": None, "last_error": None,
    }


def _app(config):
    from tswarm.app import create_app

    return create_app(config)


# -- the journal side -------------------------------------------------------------------------


def test_status_command_reads_the_backlog_from_the_data_dir(journal, monkeypatch, run):
    """`tswarm status` needs no server: it reads the journal (here with one reading waiting)."""
    register(journal, "a")
    add_readings(journal, "a", [(1_795_000_000_000_000_000, 20, 50)])
    monkeypatch.setenv("TSWARM_STORE", "influxdb")
    monkeypatch.setenv("TSWARM_INFLUX_API", "1")
    monkeypatch.setenv("TSWARM_INFLUX_URL", "http://127.0.0.1:8086")
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["oldest_age_s"] > 0
    del status["oldest_age_s"]
    storage = {"engine": journal.engine, "where": journal.where}  # a URL's password as ***
    assert status == {
        "store": "influxdb", "influxdb": "v1 API at http://127.0.0.1:8086, database 'tswarm'", "backlog": 1,
        "last_error": None, "rejected": 0, "forward_cursor": 0, "retention_s": 30 * 86400, "storage": storage,
    }
    assert "***" in storage["where"] if journal.engine == "postgresql" else storage["where"].endswith("tswarm.db")
    text = run("status").output
    assert "backlog     1 reading(s) not yet in InfluxDB, oldest waiting" in text
    monkeypatch.setenv("TSWARM_STORE", "sqlite")
    assert run("status").output == (
        f"journal     {journal.engine}, {journal.where}\n"
        "store       sqlite (the journal is the store; nothing to forward)\n"
    )


