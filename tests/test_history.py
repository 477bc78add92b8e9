"""Reading pruned readings back from InfluxDB: the v2 read path against a recorded contract, and
an answer that breaks off mid-stream.

No InfluxDB 2 can run here (VictoriaMetrics, the v2 write peer of the integration tests, does not
speak Flux), so the v2 path is tested against a small aiohttp fake of ``POST /api/v2/query`` that
answers annotated CSV the way InfluxDB 2.x does (``#datatype``/``#group``/``#default`` rows, then
``,result,table,...``); the test checks the exact Flux query influxdb-client sends. The v1 path runs
against the real influxd in tests/integration/test_history.py; only an answer that breaks off in
the middle, which a real influxd cannot be made to do on cue, is played here by a fake ``/query``.
"""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from tswarm.export import export_chunks
from tswarm.history import HistoryUnavailable
from tswarm.influx.query import V2History, flux
from tswarm.storage import PRUNED_BEFORE, Storage, storage_for
from tests.conftest import open_journal, register

pytestmark = pytest.mark.engines

NS = 1_000_000_000
T0 = 1_795_600_000 * NS

# The answer of InfluxDB 2.x to the Flux of tswarm.influx.query.flux: one table (after group()), the
# columns of the final map(), time as a long of nanoseconds, fields as doubles ("23", not "23.0").
ANNOTATED_CSV = (
    "#datatype,string,long,long,string,double,double\r\n"
    "#group,false,false,false,false,false,false\r\n"
    "#default,_result,,,,,\r\n"
    ",result,table,ts,node,temperature,humidity\r\n"
    f",,0,{T0},attic,23,45\r\n"
    f",,0,{T0},cellar,-3.2,80\r\n"
    f",,0,{T0 + 5 * NS + 123},attic,23.4,45.1\r\n"
    "\r\n"
)

EXPECTED_FLUX = """from(bucket: "tswarm")
  |> range(start: 2026-11-25T09:46:40.000000000Z, stop: 2026-11-25T09:46:50.000000000Z)
  |> filter(fn: (r) => r._measurement == "climate" and (r._field == "temperature" or r._field == "humidity"))
  |> filter(fn: (r) => r.node == "attic")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> filter(fn: (r) => r._time > 2026-11-25T09:46:40.000000000Z or (r._time == 2026-11-25T09:46:40.000000000Z and r.node > "attic"))
  |> group()
  |> sort(columns: ["_time", "node"])
  |> limit(n: 7)
  |> map(fn: (r) => ({ts: int(v: r._time), node: r.node, temperature: r.temperature, humidity: r.humidity}))"""


def test_flux_of_a_range_resumed_after_a_cursor_with_a_limit():
    assert flux("tswarm", T0, T0 + 10 * NS, "attic", after=(T0, "attic"), limit=7) == EXPECTED_FLUX


@pytest.fixture
async def influxdb2(aiohttp_server):
    """The fake ``/api/v2/query``; ``.requests`` records what each query sent."""
    requests = []

    async def query(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        requests.append({"org": request.query.get("org"), "auth": request.headers.get("Authorization"),
                         "accept_encoding": request.headers.get("Accept-Encoding"), "body": body})
        if request.headers.get("Authorization") != "Token the-token":
            return web.json_response({"code": "unauthorized", "message": "unauthorized access"}, status=401)
        return web.Response(text=ANNOTATED_CSV, content_type="text/csv", charset="utf-8")

    app = web.Application()
    app.router.add_post("/api/v2/query", query)
    server = await aiohttp_server(app)
    server.requests = requests
    server.url = str(server.make_url("")).rstrip("/")
    return server


async def test_v2_reads_records_as_readings_with_exact_nanoseconds(influxdb2):
    def read():
        with V2History(influxdb2.url, "the-token", "my-org", "tswarm") as influx:
            return list(influx.readings(T0, T0 + 10 * NS, "attic", after=(T0, "attic"), limit=7))

    rows = await asyncio.to_thread(read)
    assert rows == [(T0, "attic", 23.0, 45.0), (T0, "cellar", -3.2, 80.0), (T0 + 5 * NS + 123, "attic", 23.4, 45.1)]
    [sent] = influxdb2.requests
    assert sent["org"] == "my-org" and sent["auth"] == "Token the-token"
    assert sent["body"]["query"] == EXPECTED_FLUX
    assert sent["body"]["dialect"]["annotations"] == ["datatype", "group", "default"]


async def test_v2_refusal_is_history_unavailable_with_influxdbs_message(influxdb2):
    def read():
        with V2History(influxdb2.url, "wrong-token", "my-org", "tswarm") as influx:
            return list(influx.readings(None, T0, None))

    with pytest.raises(HistoryUnavailable) as caught:
        await asyncio.to_thread(read)
    assert str(caught.value) == (
        f"readings the journal has pruned are only in InfluxDB v2 API at {influxdb2.url}, bucket 'tswarm',"
        " which could not give them: HTTP 401: unauthorized access"
    )


async def test_v2_export_of_a_pruned_journal_is_influxdb_then_the_journal(influxdb2, tmp_path):
    """The whole export over the v2 path: the older part from the fake, the rest from the journal."""
    with open_journal(tmp_path / "data") as journal:
        register(journal, "attic")
        journal.add_readings([("attic", T0 + 10 * NS, 21.5, 40.0)])
        journal.set_meta(PRUNED_BEFORE, str(T0 + 10 * NS))

        def export():
            with V2History(influxdb2.url, "the-token", "my-org", "tswarm") as influx:
                return "".join(export_chunks(journal, influx=influx))

        text = await asyncio.to_thread(export)
    assert text == (
        "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        "2026-11-25T09:46:40.000000000Z,attic,23.0,45.0,,,,\r\n"
        "2026-11-25T09:46:40.000000000Z,cellar,-3.2,80.0,,,,\r\n"
        "2026-11-25T09:46:45.000000123Z,attic,23.4,45.1,,,,\r\n"
        "2026-11-25T09:46:50.000000000Z,attic,21.5,40.0,,,,\r\n"
    )
    assert "range(start: 1970-01-01T00:00:00.000000000Z, stop: 2026-11-25T09:46:50.000000000Z)" in (
        influxdb2.requests[0]["body"]["query"]
    )


ROWS_BEFORE_BREAK = 6000  # more than one batch of the export: the first goes out before the break


async def test_an_influxdb1_answer_that_breaks_off_aborts_the_api_response(aiohttp_server, make_client):
    async def query(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        values = [[T0 + i, 20.5, 50.0, "attic"] for i in range(ROWS_BEFORE_BREAK)]
        chunk = {"results": [{"statement_id": 0, "series": [
            {"name": "climate", "columns": ["time", "temperature", "humidity", "node"], "values": values,
             "partial": True}], "partial": True}]}
        await response.write(json.dumps(chunk).encode() + b"\n")
        request.transport.close()  # InfluxDB died in the middle of its answer
        return response

    app = web.Application()
    app.router.add_get("/query", query)
    fake = await aiohttp_server(app)
    client = await make_client(store="influxdb", influx_api="1", influx_url=str(fake.make_url("")).rstrip("/"))
    with storage_for(_config(client)) as journal:
        register(journal, "attic")
        journal.set_meta(PRUNED_BEFORE, str(T0 + 10 * NS))
    response = await client.get("/api/readings")
    assert response.status == 200  # the first rows were on their way when InfluxDB broke off
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


def _config(client):
    from tswarm import keys

    return client.server.app[keys.CONFIG]


# -- the journal's horizon (real SQLite, no InfluxDB needed) -----------------------------------------


def _insert(journal: Storage, rows) -> None:
    journal.add_readings([(name, ts, t, h) for ts, name, t, h in rows])


def test_a_history_cursor_with_store_sqlite_resumes_at_its_instant(journal):
    """A (time, node) cursor met by a journal-only export (the store was switched back to sqlite)."""
    for name in ("a", "b"):
        register(journal, name)
    _insert(journal, [(T0, "b", 1.0, 2.0), (T0, "a", 3.0, 4.0), (T0 + NS, "a", 5.0, 6.0)])
    text = "".join(export_chunks(journal, fmt="ndjson", after=(T0, "a")))
    assert [json.loads(line)["node"] for line in text.splitlines()] == ["b", "a", "a"]
