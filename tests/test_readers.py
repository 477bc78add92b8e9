"""Reader routes (service/readers.py): GET /api/nodes, GET /api/nodes/{name}, GET /api/readings and its
export thread. Who may read them: tests/test_access.py; what an export holds: tests/test_export.py."""
from __future__ import annotations

import base64
import io
import json
import time
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tswarm.export import decode_cursor
from tswarm.readers import READINGS_PARAMS

from .conftest import ALL_CSV, NS, T0, add_readings, register

pytestmark = pytest.mark.engines

READ = "read-token-0123456789"


# -- health ------------------------------------------------------------------------------------


# -- GET /api/nodes ----------------------------------------------------------------------------


async def test_nodes_lists_every_node_with_last_reading_health_and_24h_count(make_client, journal):
    now = time.time_ns()
    for name in ("fresh", "late", "silent", "halted", "new"):
        register(journal, name, created=name != "new")
    add_readings(journal, "fresh", [(now - 25 * 3600 * NS, 1.0, 1.0), (now - 600 * NS, 2.0, 2.0), (now - 60 * NS, 21.5, 45.0)])
    add_readings(journal, "late", [(now - 900 * NS, 20.0, 50.0)])
    add_readings(journal, "silent", [(now - 7200 * NS, 19.0, 55.0)])
    add_readings(journal, "halted", [(now - 60 * NS, 18.0, 60.0)])
    journal.set_halt("halted", True)
    client = await make_client()
    resp = await client.get("/api/nodes")
    assert resp.status == 200
    report = await resp.json()
    assert report["halted_all"] is False
    nodes = {n["name"]: n for n in report["nodes"]}
    assert list(nodes) == ["fresh", "halted", "late", "new", "silent"]
    assert {name: n["health"] for name, n in nodes.items()} == {
        "fresh": "ok", "halted": "halted", "late": "late", "new": "never", "silent": "silent",
    }
    fresh = nodes["fresh"]
    assert (fresh["temperature"], fresh["humidity"], fresh["readings_24h"], fresh["interval_s"]) == (21.5, 45.0, 2, 300)
    assert fresh["last_seen"].endswith("Z") and 59 < fresh["age_s"] < 120
    assert nodes["new"] == {
        **nodes["new"], "last_seen": None, "age_s": None, "temperature": None, "humidity": None,
        "readings_24h": 0, "created": False, "halted": False,
    }


async def test_a_longer_interval_keeps_a_quiet_node_ok(make_client, journal):
    register(journal, "hourly", created=True)
    add_readings(journal, "hourly", [(time.time_ns() - 1800 * NS, 20.0, 50.0)])
    client = await make_client()
    assert (await (await client.get("/api/nodes")).json())["nodes"][0]["health"] == "late"
    journal.set_interval("hourly", 3600)
    node = (await (await client.get("/api/nodes")).json())["nodes"][0]
    assert (node["health"], node["interval_s"]) == ("ok", 3600)


async def test_halting_every_node_shows_in_the_report(make_client, three_nodes):
    three_nodes.set_halt(None, True)
    client = await make_client()
    report = await (await client.get("/api/nodes")).json()
    assert report["halted_all"] is True
    assert {n["health"] for n in report["nodes"]} == {"halted"}


# -- GET /api/readings -------------------------------------------------------------------------


async def test_readings_stream_as_csv_in_time_order_with_a_header(make_client, three_nodes):
    client = await make_client()
    resp = await client.get("/api/readings")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert "X-Next-Cursor" not in resp.headers
    assert await resp.text() == ALL_CSV


async def test_csv_reads_as_is_in_pandas(make_client, three_nodes):
    import pandas as pd

    client = await make_client()
    text = await (await client.get("/api/readings")).text()
    frame = pd.read_csv(io.StringIO(text), parse_dates=["time"])
    expected = pd.DataFrame({
        "time": pd.to_datetime([T0, T0 + 100 * NS, T0 + 300 * NS, T0 + 300 * NS], utc=True),
        "node": ["kitchen", "attic", "kitchen", "attic"],
        "temperature": [21.5, -3.2, 21.75, 5.0],
        "humidity": [40.0, 80.0, 41.0, 70.5],
        **{column: [float("nan")] * 4 for column in ("vbat", "rssi", "awake_ms", "lost")},  # empty cells: not sent
    })
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    assert str(frame["time"].dtype).startswith("datetime64") and str(frame["time"].dt.tz) == "UTC"


async def test_readings_as_ndjson_filtered_by_node_and_time(make_client, three_nodes):
    client = await make_client()
    resp = await client.get("/api/readings", params={
        "format": "ndjson", "node": "attic", "start": "2025-11-24T16:01:40Z", "stop": str(T0 // NS + 301),
    })
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    assert await resp.text() == (
        '{"time": "2025-11-24T16:01:40.000000000Z", "node": "attic", "temperature": -3.2, "humidity": 80.0}\n'
        '{"time": "2025-11-24T16:05:00.000000000Z", "node": "attic", "temperature": 5.0, "humidity": 70.5}\n'
    )


async def test_stop_is_exclusive_and_epoch_seconds_with_fractions_work(make_client, three_nodes):
    client = await make_client()
    text = await (await client.get("/api/readings", params={"start": str(T0 // NS), "stop": f"{T0 // NS + 300}.0"})).text()
    assert text == ALL_CSV.split("\r\n", 3)[0] + "\r\n" + "\r\n".join(ALL_CSV.split("\r\n")[1:3]) + "\r\n"


async def test_limit_pages_through_everything_with_the_next_cursor(make_client, three_nodes):
    client = await make_client()
    pages, params = [], {"limit": "3"}
    while True:
        resp = await client.get("/api/readings", params=params)
        assert resp.status == 200
        pages.append(await resp.text())
        if "X-Next-Cursor" not in resp.headers:
            break
        assert resp.headers["Link"] == f'</api/readings?limit=3&cursor={resp.headers["X-Next-Cursor"]}>; rel="next"'
        params = {"limit": "3", "cursor": resp.headers["X-Next-Cursor"]}
    assert len(pages) == 2
    header, *rows = ALL_CSV.splitlines(keepends=True)
    assert pages == [header + "".join(rows[:3]), header + rows[3]]


async def test_a_page_that_ends_exactly_at_the_last_row_has_no_next_cursor(make_client, three_nodes):
    client = await make_client()
    resp = await client.get("/api/readings", params={"limit": "4"})
    assert "X-Next-Cursor" not in resp.headers
    assert await resp.text() == ALL_CSV


async def test_a_cursor_resumes_after_rows_sharing_a_timestamp(make_client, three_nodes):
    client = await make_client()
    resp = await client.get("/api/readings", params={"limit": "3", "format": "ndjson"})
    cursor = resp.headers["X-Next-Cursor"]
    assert decode_cursor(cursor)[0] == T0 + 300 * NS  # the page ends between two rows of one instant
    rest = await (await client.get("/api/readings", params={"cursor": cursor, "format": "ndjson"})).text()
    assert [json.loads(line)["node"] for line in rest.splitlines()] == ["attic"]


@pytest.mark.parametrize(
    "params, detail",
    [
        ({"format": "xml"}, "format must be one of csv, ndjson"),
        ({"start": "yesterday"}, "start: 'yesterday' is not an RFC 3339 time (2026-11-25T11:04:19Z) or epoch seconds"),
        ({"stop": "2025-13-01"}, None),
        ({"start": "200", "stop": "100"}, "stop must be after start"),
        ({"limit": "0"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"limit": "-3"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"cursor": "not-a-cursor"}, "cursor is not one this service handed out; pass it back exactly as received"),
        ({"node": "no/slash"}, None),
        ({"from": "2025-01-01"}, None),
    ],
)
async def test_bad_parameters_get_400_json(make_client, three_nodes, params, detail):
    client = await make_client()
    resp = await client.get("/api/readings", params=params)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_parameter"
    if detail is not None:
        assert body["detail"] == detail


async def test_an_unknown_node_gets_404_and_a_removed_one_keeps_its_history(make_client, three_nodes):
    client = await make_client()
    resp = await client.get("/api/readings", params={"node": "garage"})
    assert (resp.status, (await resp.json())["error"]) == (404, "unknown_node")
    three_nodes.remove_node("attic")
    text = await (await client.get("/api/readings", params={"node": "attic"})).text()
    assert text.count("attic") == 2


async def test_a_new_reading_is_exported_right_after_its_202(make_client, three_nodes):
    client = await make_client()
    body = json.dumps({"name": "cellar", "data": "12.5 77.0"})
    resp = await client.post("/api/nodes/cellar", data=body, headers={"Authorization": " Basic " + base64.b64encode(b"cellar:secret-pw").decode()})
    assert resp.status == 202
    text = await (await client.get("/api/readings", params={"node": "cellar"})).text()
    assert text == f"time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n{(await resp.json())['time']},cellar,12.5,77.0,,,,\r\n"


async def test_an_export_leaves_node_requests_answered(make_client, journal):
    """A download stalled by its reader (nothing read) keeps node requests and /api/nodes going."""
    register(journal, "busy", created=True)
    add_readings(journal, "busy", [(T0 + i * NS, 20.0, 50.0) for i in range(50_000)])
    client = await make_client()
    stalled = await client.get("/api/readings")  # headers only: the body waits in the queue
    assert stalled.status == 200
    resp = await client.post(
        "/api/nodes/busy", data=json.dumps({"name": "busy", "data": "1 2"}),
        headers={"Authorization": " Basic " + base64.b64encode(b"busy:secret-pw").decode()},
    )
    assert resp.status == 202
    assert (await client.get("/api/nodes")).status == 200
    assert (await stalled.text()).count("\r\n") == 50_000 + 1 + 0  # header + rows (the new one came after)


# -- who may read ------------------------------------------------------------------------------


# -- the page ----------------------------------------------------------------------------------


# -- the export thread -------------------------------------------------------------------------


async def test_the_export_thread_stops_and_cleans_up_when_the_reader_goes_away():
    import asyncio
    import contextlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tswarm.readers import iterate_in_thread

    closed, produced = threading.Event(), []

    def produce():
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    with ThreadPoolExecutor(1) as executor:
        items = iterate_in_thread(executor, produce, maxsize=2)
        async with contextlib.aclosing(items):
            assert [await anext(items) for _ in range(3)] == [0, 1, 2]
        assert await asyncio.get_running_loop().run_in_executor(None, closed.wait, 10)
    assert len(produced) <= 3 + 2 + 2  # bounded by the queue, not the million


async def test_an_error_in_the_export_thread_reaches_the_handler():
    from concurrent.futures import ThreadPoolExecutor

    from tswarm.readers import iterate_in_thread

    def produce():
        yield "first"
        raise OSError("disk gone")

    with ThreadPoolExecutor(1) as executor:
        got = []
        with pytest.raises(OSError, match="disk gone"):
            async for item in iterate_in_thread(executor, produce):
                got.append(item)
    assert got == ["first"]


async def test_one_node_by_name(make_client, three_nodes):
    client = await make_client(read_token=READ)
    headers = {"Authorization": f"Bearer {READ}"}
    everyone = (await (await client.get("/api/nodes", headers=headers)).json())["nodes"]
    resp = await client.get("/api/nodes/attic", headers=headers)
    assert resp.status == 200
    assert {**await resp.json(), "age_s": None} == {**everyone[0], "age_s": None}  # age moves on
    resp = await client.get("/api/nodes/garage", headers=headers)
    assert (resp.status, (await resp.json())["error"]) == (404, "unknown_node")
    assert (await client.get("/api/nodes/attic")).status == 401
    basic = {"Authorization": " Basic " + base64.b64encode(b"attic:secret-pw").decode()}
    assert (await client.get("/api/nodes/attic", headers=basic)).status == 403


@pytest.mark.parametrize("name", ["x" * 65, "x" * 4000, "%3Cscript%3E", "caf%C3%A9", "a%00b", "-a", "a%20b"])
async def test_a_name_no_node_can_have_gets_400_and_is_not_echoed(make_client, three_nodes, name):
    """Before: 404 with the name quoted back, however long, whatever it held (4,000 characters,
    markup, NUL). A name that could be a node's is the only one a 404 quotes."""
    client = await make_client(read_token=READ)
    resp = await client.get(f"/api/nodes/{name}", headers={"Authorization": f"Bearer {READ}"})
    body = await resp.json()
    assert (resp.status, body["error"]) == (400, "bad_node_name")
    assert "<script>" not in body["detail"] and "x" * 100 not in body["detail"]


# -- every parameter at its edges ----------------------------------------------------------------

ascii_digits = st.text("0123456789", min_size=1, max_size=25)
unicode_digits = st.text(st.characters(categories=["Nd"]), min_size=1, max_size=4)
numbers = st.one_of(
    ascii_digits,
    st.builds("".join, st.tuples(st.sampled_from(["-", "+", " ", ""]), ascii_digits, st.sampled_from(["", ".", ".5", ".0000000001"]))),
    unicode_digits,
    st.sampled_from(["9223372036854775807", "9223372036854775808", "-9223372036854775809", "9223372036", "-9223372037",
                     "1e9", "inf", "nan", "0x10", "1_000", "²", "٣", "１２", "", " ", "-0"]),
)
times = st.builds(
    "{:04d}-{:02d}-{:02d}{}{}{}".format,
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32),
    st.sampled_from(["", "T00:00:00", "T23:59:59", " 12:00", "T24:00:00"]),
    st.sampled_from(["", ".5", ".123456789"]),
    st.sampled_from(["", "Z", "+01:00", "-23:59", "+14:00", "+99:00", "+0100"]),
)
cursor_texts = st.builds(
    "{}.{}.{}".format, st.sampled_from(["r1", "h1"]),
    st.integers(-(10**20) + 1, 10**20 - 1), st.one_of(st.integers(0, 10**20 - 1), st.sampled_from(["attic", "x" * 64, "-a"])),
)
cursors = st.one_of(cursor_texts.map(lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("=")), st.text(max_size=12))
anything = st.one_of(numbers, times, cursors, st.text(max_size=12), st.sampled_from(["attic", "kitchen", "garage", "csv", "ndjson"]))
queries = st.dictionaries(st.sampled_from(sorted(READINGS_PARAMS)), anything, max_size=4)


async def assert_complete_or_json_4xx(resp) -> None:
    """A 200 with its whole body, or a 4xx with a JSON error; never a 5xx, never a body cut short."""
    try:
        body = await resp.read()
    except aiohttp.ClientPayloadError as exc:
        pytest.fail(f"{resp.status} with a body cut short: {exc}")
    if resp.status == 200:
        text = body.decode()
        if resp.content_type == "text/csv":
            assert text.startswith("time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n") and text.endswith("\r\n")
        else:
            assert all(json.loads(line) for line in text.splitlines())
        return
    assert resp.status in (400, 404), (resp.status, body)  # bad_parameter, unknown_node
    error = json.loads(body)
    assert set(error) == {"error", "detail"} and error["detail"], error


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries)
@example(query={"start": "99999999999999999999"})
@example(query={"stop": "-99999999999"})
@example(query={"start": "2300-01-01"})
@example(query={"start": "0001-01-01T00:00:00+01:00"})
@example(query={"limit": "²"})
@example(query={"limit": "99999999999999999999"})
@example(query={"limit": "9223372036854775807"})
@example(query={"cursor": base64.urlsafe_b64encode(b"r1.99999999999999999999.1").decode()})
@example(query={"cursor": base64.urlsafe_b64encode(b"r1.1.99999999999999999999").decode(), "limit": "1"})
async def test_every_query_is_answered_whole_or_refused_with_json(client, three_nodes, query):
    """One app answers every example (an app per example would hold a connection pool each, on PostgreSQL)."""
    await assert_complete_or_json_4xx(await client.get("/api/readings", params=query))


@pytest.mark.parametrize(
    "params, detail",
    [
        ({"start": "99999999999999999999"}, "start: '99999999999999999999' is outside the times tswarm can hold"
         " (1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)"),
        ({"stop": "9223372037"}, "stop: '9223372037' is outside the times tswarm can hold"
         " (1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)"),
        ({"start": "2300-01-01"}, "start: '2300-01-01' is outside the times tswarm can hold"
         " (1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)"),
        ({"start": "0001-01-01T00:00:00+01:00"}, "start: '0001-01-01T00:00:00+01:00' is outside the times tswarm can hold"
         " (1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)"),
        ({"start": "١٧٦٤٠٠٠٠٠٠"}, "start: '١٧٦٤٠٠٠٠٠٠' is not an RFC 3339 time (2026-11-25T11:04:19Z) or epoch seconds"),
        ({"stop": "１７６４０００３００"}, "stop: '１７６４０００３００' is not an RFC 3339 time (2026-11-25T11:04:19Z) or epoch seconds"),
        ({"limit": "٣"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"limit": "²"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"limit": "1000000001"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"limit": "99999999999999999999"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"limit": "+3"}, "limit must be a whole number of rows from 1 to 1000000000 (ASCII digits)"),
        ({"cursor": base64.urlsafe_b64encode(b"r1.99999999999999999999.1").decode()},
         "cursor is not one this service handed out; pass it back exactly as received"),
        ({"cursor": base64.urlsafe_b64encode(b"r1.1.99999999999999999999").decode()},
         "cursor is not one this service handed out; pass it back exactly as received"),
        ({"cursor": "ｃｊＥｕＭＳ４ｘ"}, "cursor is not one this service handed out; pass it back exactly as received"),
    ],
)
async def test_out_of_range_and_unicode_parameters_get_400(make_client, three_nodes, params, detail):
    client = await make_client()
    resp = await client.get("/api/readings", params=params)
    assert (resp.status, await resp.json()) == (400, {"error": "bad_parameter", "detail": detail})


async def test_a_parameter_given_twice_gets_400(make_client, three_nodes):
    client = await make_client()
    resp = await client.get("/api/readings?start=1764000000&start=1764000100")
    assert (resp.status, await resp.json()) == (400, {"error": "bad_parameter", "detail": "give start once"})


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=70), query=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
async def test_node_routes_answer_any_name_and_query_with_json(client, three_nodes, name, query):
    """One app answers every example, as above."""
    await assert_json_reply(await client.get("/api/nodes", params=query))
    await assert_json_reply(await client.get(f"/api/nodes/{quote(name, safe='')}", params=query))


async def assert_json_reply(resp) -> None:
    body = await resp.json()
    assert resp.status == 200 or (resp.status in (400, 404) and set(body) == {"error", "detail"}), (resp.status, body)


@pytest.mark.parametrize("path", ["/api/nodes", "/api/nodes/kitchen"])
async def test_the_nodes_report_is_read_off_the_loop(make_client, three_nodes, monkeypatch, path):
    """GET /api/nodes reads the journal in a storage thread: while that read waits, /healthz is answered."""
    import asyncio

    from .test_pool import Held

    client = await make_client()
    listing = Held(monkeypatch, "list_nodes", type(three_nodes))
    report = asyncio.ensure_future(client.get(path))
    await listing.wait_entered()
    assert (await client.get("/healthz")).status == 200
    assert not report.done()
    listing.release()
    assert (await report).status == 200
    assert listing.released == [True]
