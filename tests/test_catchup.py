"""Catching up (service/history.py's passes, service/export.py's tokens, GET /api/readings' headers,
``tswarm export --cursor-file``): a reading kept on a node through an outage arrives with an older time
than readings already stored, and a reader that resumes after it arrived must get it, once, and
nothing again. The journal is real (each engine); a kept reading is stored as the writer stores one,
with its own (older) time and the next id, through :meth:`Storage.add_readings`, or through the
writer itself with ``age_s``."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tswarm.export import decode_cursor, encode_cursor, export_chunks
from tswarm.history import Cursor, plan

from .conftest import NS, T0, add_readings, fresh_journal, register

pytestmark = pytest.mark.engines


def page(journal, cursor=None, limit=None, **bounds):
    """One page as the API makes it: planned and exported in one snapshot. ``(rows, resume token, more)``,
    rows as ``(time, node, temperature)``."""
    after = None if cursor is None else decode_cursor(cursor)
    with journal.snapshot():
        planned = plan(journal, None, after=after, limit=limit, **bounds)
        text = "".join(export_chunks(journal, fmt="ndjson", after=after, limit=limit, page=planned, **bounds))
    rows = [json.loads(line) for line in text.splitlines()]
    return [(r["time"][11:19], r["node"], r["temperature"]) for r in rows], encode_cursor(planned.resume), planned.more


@pytest.fixture
def porch(journal):
    register(journal, "porch", created=True)
    add_readings(journal, "porch", [(T0 + i * 300 * NS, 20.0 + i, 50.0) for i in range(4)])  # 16:00, 16:05, 16:10, 16:15
    return journal


def test_a_kept_reading_older_than_the_cursor_comes_on_resume_once(porch):
    rows, cursor, more = page(porch, limit=2)
    assert (rows, more) == ([("16:00:00", "porch", 20.0), ("16:05:00", "porch", 21.0)], True)
    add_readings(porch, "porch", [(T0 + 150 * NS, 99.0, 50.0)])  # kept through an outage: taken at 16:02:30
    rows, cursor, more = page(porch, cursor, limit=2)
    assert (rows, more) == ([("16:10:00", "porch", 22.0), ("16:15:00", "porch", 23.0)], True)
    rows, cursor, more = page(porch, cursor, limit=2)
    assert (rows, more) == ([("16:02:30", "porch", 99.0)], False)  # the pass of what arrived since
    assert page(porch, cursor, limit=2)[:3:2] == ([], False)  # caught up: nothing repeated


def test_the_last_page_and_an_export_without_limit_give_a_cursor_that_catches_up(porch):
    rows, cursor, more = page(porch)
    assert len(rows) == 4 and not more
    assert page(porch, cursor)[0] == []
    add_readings(porch, "porch", [(T0 + 1000 * NS, 30.0, 50.0), (T0 - 100 * NS, 31.0, 50.0)])  # one live, one kept
    rows, again, _ = page(porch, cursor)
    assert rows == [("15:58:20", "porch", 31.0), ("16:16:40", "porch", 30.0)]  # in time order within the pass
    assert page(porch, again)[0] == []


def test_a_page_that_ends_a_pass_goes_on_with_the_next_one(porch):
    _, cursor, _ = page(porch, limit=3)
    add_readings(porch, "porch", [(T0 + 60 * NS, 40.0, 50.0), (T0 + 120 * NS, 41.0, 50.0)])
    rows, cursor, more = page(porch, cursor, limit=2)  # the last row of the first pass, then the first kept one
    assert (rows, more) == ([("16:15:00", "porch", 23.0), ("16:01:00", "porch", 40.0)], True)
    rows, cursor, more = page(porch, cursor, limit=2)
    assert (rows, more) == ([("16:02:00", "porch", 41.0)], False)


def test_a_page_that_ends_exactly_at_a_pass_end_says_whether_more_follow(porch):
    rows, cursor, more = page(porch, limit=4)
    assert len(rows) == 4 and not more and decode_cursor(cursor) == Cursor(lo=4)
    add_readings(porch, "porch", [(T0 + 60 * NS, 40.0, 50.0)])
    assert page(porch, cursor, limit=1)[0] == [("16:01:00", "porch", 40.0)]


def test_filters_hold_in_every_pass(porch):
    register(porch, "attic", created=True)
    _, cursor, _ = page(porch, node="porch", start_ns=T0 + 300 * NS)
    add_readings(porch, "attic", [(T0 + 400 * NS, 1.0, 1.0)])
    add_readings(porch, "porch", [(T0 + 100 * NS, 2.0, 2.0), (T0 + 410 * NS, 3.0, 3.0)])  # before start, and in range
    assert page(porch, cursor, node="porch", start_ns=T0 + 300 * NS)[0] == [("16:06:50", "porch", 3.0)]


async def test_readings_kept_by_the_writer_are_caught_up(porch):
    """The writer's own kept reading (``age_s``): its time is older, its id the next one."""
    _, cursor, _ = page(porch)
    writer = porch.writer()
    await writer.start()
    try:
        node_id = porch.node_auth("porch").id
        await writer.append(node_id, 18.5, 60.0, age_s=3600.0)
        await writer.append(node_id, 18.6, 60.0)
    finally:
        await writer.close()
    rows = page(porch, cursor)[0]
    assert sorted(t for _, _, t in rows) == [18.5, 18.6] and rows[0][2] == 18.5  # the older one first


# -- the API and the CLI -----------------------------------------------------------------------------


async def test_every_answer_has_a_resume_cursor_and_only_a_cut_page_a_next_one(make_client, porch):
    client = await make_client()
    whole = await client.get("/api/readings")
    assert "X-Next-Cursor" not in whole.headers and "Link" not in whole.headers
    resume = whole.headers["X-Resume-Cursor"]
    cut = await client.get("/api/readings", params={"limit": "3"})
    assert cut.headers["X-Resume-Cursor"] == cut.headers["X-Next-Cursor"]
    add_readings(porch, "porch", [(T0 + 30 * NS, 19.0, 50.0)])  # kept: 16:00:30
    later = await client.get("/api/readings", params={"cursor": resume})
    assert await later.text() == (
        "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        "2025-11-24T16:00:30.000000000Z,porch,19.0,50.0,,,,\r\n"
    )
    rest = await client.get("/api/readings", params={"limit": "3", "cursor": cut.headers["X-Next-Cursor"]})
    assert (await rest.text()).splitlines()[1:] == [
        "2025-11-24T16:15:00.000000000Z,porch,23.0,50.0,,,,", "2025-11-24T16:00:30.000000000Z,porch,19.0,50.0,,,,",
    ]
    assert "X-Next-Cursor" not in rest.headers
    caught_up = await client.get("/api/readings", params={"cursor": rest.headers["X-Resume-Cursor"]})
    assert (await caught_up.text()).count("\r\n") == 1  # the header alone


def test_cli_export_with_a_cursor_file_catches_up(run, porch, tmp_path):
    state = tmp_path / "cursor"
    first = run("export", "--format", "ndjson", "--cursor-file", str(state))
    assert first.exit_code == 0 and len(first.output.splitlines()) == 4 and state.exists()
    add_readings(porch, "porch", [(T0 + 30 * NS, 19.0, 50.0)])
    second = run("export", "--format", "ndjson", "--cursor-file", str(state))
    assert second.output == '{"time": "2025-11-24T16:00:30.000000000Z", "node": "porch", "temperature": 19.0, "humidity": 50.0}\n'
    assert run("export", "--cursor-file", str(state)).output == "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\n"


def test_cli_export_refuses_a_cursor_file_that_holds_no_cursor(run, porch, tmp_path):
    state = tmp_path / "cursor"
    state.write_text("not a cursor\n")
    result = run("export", "--cursor-file", str(state))
    assert result.exit_code == 2 and result.output.splitlines()[-1] == (
        f"Error: Invalid value for '--cursor-file' ({state}): cursor is not one this service handed out;"
        " pass it back exactly as received"
    )
    assert state.read_text() == "not a cursor\n"


# -- old tokens ---------------------------------------------------------------------------------------


def test_a_token_of_earlier_tswarm_resumes_after_its_row_then_everything_stored_after(porch):
    legacy = base64.urlsafe_b64encode(f"r1.{T0 + 300 * NS}.2".encode()).decode().rstrip("=")  # the row 16:05, id 2
    add_readings(porch, "porch", [(T0 + 60 * NS, 40.0, 50.0)])  # kept, arrived after the token was handed out
    rows, cursor, _ = page(porch, legacy)
    # Nothing of the first pass follows its row; then what was stored after it (ids 3 to 5), in time order.
    assert rows == [("16:01:00", "porch", 40.0), ("16:10:00", "porch", 22.0), ("16:15:00", "porch", 23.0)]
    assert page(porch, cursor)[0] == []


def test_tokens_round_trip_and_refuse_a_row_outside_its_pass():
    for cursor in (Cursor(T0, 5, 2, 9), Cursor(T0, "attic", 0, 7), Cursor(lo=12), Cursor(-5, 1, 0, 1)):
        assert decode_cursor(encode_cursor(cursor)) == cursor
    for text in ("r1.5.9.2.8", "r1.5.2.2.9", "r1.5.1.3.2", "n1.-1", "n1.x", "h1.5.attic:x", "r1.5.1.0"):
        with pytest.raises(ValueError):
            decode_cursor(base64.urlsafe_b64encode(text.encode()).decode())


# -- every order of arrivals and pages -------------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.lists(st.integers(-50, 150), min_size=1, max_size=4)),  # seconds from T0
        st.tuples(st.just("read"), st.one_of(st.none(), st.integers(1, 5))),  # a page of this limit (None: all)
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(st.integers(0, 100), max_size=6), steps=steps)
def test_a_reader_gets_every_reading_exactly_once_whatever_arrives_when(tmp_path_factory, first, steps):
    with fresh_journal(tmp_path_factory) as journal:
        register(journal, "n", created=True)
        stored, seen, cursor, used = [], [], None, set()

        def arrive(offsets):
            rows = []
            for offset in offsets:  # unique times, as the writer makes them
                ts = T0 + offset * NS
                while ts in used:
                    ts += 1
                used.add(ts)
                rows.append((ts, float(len(stored) + len(rows)), 50.0))
            add_readings(journal, "n", rows)
            stored.extend(t for _, t, _ in rows)

        if first:
            arrive(first)
        for kind, value in steps:
            if kind == "arrive":
                arrive(value)
            else:
                rows, cursor, _ = page(journal, cursor, value)
                seen.extend(t for _, _, t in rows)
        while True:  # catch up
            rows, cursor, more = page(journal, cursor, 3)
            seen.extend(t for _, _, t in rows)
            if not more:
                break
        assert sorted(seen) == sorted(stored) and len(seen) == len(set(seen))
