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
from tswarm.history import Cursor, HistoryUnavailable, plan
from tswarm.influx.query import InfluxHistory, V2History, flux
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


# -- InfluxDB answers that are not InfluxDB's, and cursors of rows the journal pruned since -----------


def _fake_query(answer):
    """A fake ``/query`` that streams ``answer``: a list of chunks (JSON values, or bytes as they are)."""

    async def query(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in answer:
            await response.write(chunk if isinstance(chunk, bytes) else json.dumps(chunk).encode() + b"\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/query", query)
    return app


def _series_chunk(values, partial):
    series = {"name": "climate", "columns": ["time", "temperature", "humidity", "node"], "values": values}
    return {"results": [{"statement_id": 0, "series": [dict(series, partial=True) if partial else series],
                         **({"partial": True} if partial else {})}]}


@pytest.mark.parametrize("answer", [
    [{}],  # a server that answers JSON to any path: read as a complete, empty answer before
    [{"results": []}],
    [[1, 2]],
    [_series_chunk([["2026-11-25T09:46:40Z", 21.5, 40.0, "attic"]], False)],  # epoch=ns not honoured
    [_series_chunk([[T0, "21.5", 40.0, "attic"]], False)],
    [_series_chunk([[T0 + 20 * NS, 21.5, 40.0, "attic"]], False)],  # outside time < horizon
    [_series_chunk([[T0 + NS, 21.5, 40.0, "attic"], [T0, 21.6, 40.0, "attic"]], False)],  # out of time order
])
async def test_an_answer_that_is_not_influxdbs_is_a_503_before_any_byte(aiohttp_server, make_client, answer):
    fake = await aiohttp_server(_fake_query(answer))
    client = await make_client(store="influxdb", influx_api="1", influx_url=str(fake.make_url("")).rstrip("/"))
    with storage_for(_config(client)) as journal:
        register(journal, "attic")
        journal.add_readings([("attic", T0 + 10 * NS, 21.5, 40.0)])
        journal.set_meta(PRUNED_BEFORE, str(T0 + 10 * NS))
    response = await client.get("/api/readings")
    assert response.status == 503 and response.headers["Retry-After"]
    body = await response.json()
    assert body["error"] == "history_unavailable" and "an answer that is not InfluxDB's" in body["detail"]


async def test_an_answer_that_turns_to_garbage_mid_way_cuts_the_body_with_one_log_line(
    aiohttp_server, make_client, caplog
):
    good = [[T0 + i, 20.5, 50.0, "attic"] for i in range(ROWS_BEFORE_BREAK)]
    fake = await aiohttp_server(_fake_query([_series_chunk(good, True), _series_chunk([["soon", None, 1, "attic"]], False)]))
    client = await make_client(store="influxdb", influx_api="1", influx_url=str(fake.make_url("")).rstrip("/"))
    with storage_for(_config(client)) as journal:
        register(journal, "attic")
        journal.set_meta(PRUNED_BEFORE, str(T0 + 10 * NS))
    caplog.set_level("WARNING", logger="tswarm.readers")
    response = await client.get("/api/readings")
    assert response.status == 200  # the first rows were on their way
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    [record] = [r for r in caplog.records if r.name == "tswarm.readers"]
    assert record.levelname == "WARNING" and record.exc_info is None  # one line, no traceback
    assert "an answer that is not InfluxDB's" in record.getMessage()


class _Stored(InfluxHistory):
    """An InfluxDB that holds ``rows`` (every reading the journal forwarded), in time order."""

    def __init__(self, rows):
        self.rows = sorted(rows)

    def _query(self, start_ns, stop_ns, node, with_extra=False):
        for ts, name, t, h in self.rows:
            if (start_ns is None or ts >= start_ns) and ts < stop_ns and node in (None, name):
                yield (ts, name, t, h, None, None, None, None) if with_extra else (ts, name, t, h)


def _page(journal, influx, after, limit):
    with journal.snapshot():
        page = plan(journal, influx, after=after, limit=limit)
        text = "".join(export_chunks(journal, fmt="ndjson", influx=influx, page=page, after=after, limit=limit))
    return [(json.loads(line)["time"][-12:-1], json.loads(line)["node"]) for line in text.splitlines()], page


def test_a_cursor_of_a_row_pruned_since_resumes_after_it_or_repeats_only_a_shared_instant(journal):
    """A page ends on a journal row; the journal then prunes past it. A row alone at its instant (as
    the service stores them) is the one InfluxDB has there: the next page starts after it. Of
    readings that share an instant (journals of before unique timestamps), which the reader had is
    no longer known: they come again, none is lost."""
    for name in ("a", "b", "c"):
        register(journal, name)
    rows = [(T0, "b", 1.0, 2.0), (T0, "a", 3.0, 4.0), (T0 + NS, "a", 5.0, 6.0), (T0 + 2 * NS, "c", 7.0, 8.0),
            (T0 + 3 * NS, "b", 9.0, 10.0)]
    _insert(journal, rows)
    journal.mark_forwarded(journal.last_reading_id())
    influx = _Stored(rows)
    first, page = _page(journal, influx, None, 3)
    assert first == [("0.000000000", "b"), ("0.000000000", "a"), ("1.000000000", "a")]
    shared, _ = _page(journal, influx, Cursor(T0, 1, 0, 5), 2)  # after b of T0, in the (time, id) order
    journal.prune_readings(T0 + 2 * NS + 1, up_to_id=journal.last_reading_id())  # a of T0 + 1 s, and c, go
    assert journal.pruned_before() == T0 + 2 * NS + 1
    rest, page = _page(journal, influx, page.resume, 10)
    assert rest == [("2.000000000", "c"), ("3.000000000", "b")]  # not a of T0 + 1 s again
    again, _ = _page(journal, influx, Cursor(T0, 1, 0, 5), 2)  # the cursor of before the prune
    assert shared == [("0.000000000", "a"), ("1.000000000", "a")]
    assert again == [("0.000000000", "a"), ("0.000000000", "b")]  # T0's instant again: a and b
