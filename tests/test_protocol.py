"""The node protocol, row by row of DESIGN.md's table, through create_app and aiohttp's test client."""
import base64
import gzip
import json
import time
import zlib

import pytest
from hypothesis import given, settings, strategies as st
from multidict import CIMultiDict

from tswarm import auth, keys
from tswarm.names import NODE_NAME
from tswarm.timefmt import MAX_NS, MIN_NS, rfc3339

from .conftest import TEST_SCRYPT_N, register, write_lock_held
from .test_server import make_served  # noqa: F401  (fixture: the app as `tswarm serve` serves it)

pytestmark = pytest.mark.engines  # every answer the same on SQLite and PostgreSQL

PW = "secret-pw"


def hdr(login="n1", password=PW, fmt=" Basic %s"):
    """Headers as the seed firmware sends them: ' Basic %s' with a leading space."""
    return {"Authorization": fmt % auth.xauth(login, password), "Content-Type": "application/json"}


def body(data="23.4 45.1", name="n1"):
    return json.dumps({"name": name, "data": data})


def stored(journal):
    return [r for batch in journal.iter_readings() for r in batch]


async def assert_error(resp, status, error=None):
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    doc = await resp.json()
    assert set(doc) >= {"error", "detail"} and doc["detail"]
    if error:
        assert doc["error"] == error
    return doc


@pytest.fixture
def node(journal):
    register(journal, "n1", PW, created=True)
    return "n1"


async def test_put_stores_the_reading_and_answers_202(client, journal, node):
    resp = await client.put("/api/nodes/n1", data=body("23.4 45.1"), headers=hdr())
    assert resp.status == 202
    doc = await resp.json()
    assert doc["stored"] is True and doc["node"] == "n1" and doc["time"].endswith("Z")
    assert [(r[1], r[2], r[3]) for r in stored(journal)] == [("n1", 23.4, 45.1)]


async def test_trailing_slash_is_accepted(client, journal, node):
    resp = await client.put("/api/nodes/n1/", data=body("-3.2 80.0"), headers=hdr())
    assert resp.status == 202
    assert [(r[2], r[3]) for r in stored(journal)] == [(-3.2, 80.0)]


async def test_dht11_integers(client, journal, node):
    assert (await client.put("/api/nodes/n1", data=body("23 45"), headers=hdr())).status == 202
    assert [(r[2], r[3]) for r in stored(journal)] == [(23.0, 45.0)]


async def test_a_reading_of_minus_zero_is_stored_and_exported_as_zero(client, journal, node):
    """A DHT22 with its sign bit set and nothing else sends "-0.0". SQLite keeps a REAL with no fraction
    as an integer, so it reads back 0.0; PostgreSQL would keep the sign: the reading is 0.0 on every engine."""
    assert (await client.put("/api/nodes/n1", data=body("-0.0 -0"), headers=hdr())).status == 202
    assert [(str(r[2]), str(r[3])) for r in stored(journal)] == [("0.0", "0.0")]
    assert (await (await client.get("/api/readings")).text()).splitlines()[1].endswith(",n1,0.0,0.0,,,,")


async def test_put_for_uncreated_node_returns_405_with_allow_post(client, journal):
    register(journal, "n1", PW, created=False)
    resp = await client.put("/api/nodes/n1", data=body(), headers=hdr())
    await assert_error(resp, 405, "node_not_created")
    assert resp.headers["Allow"] == "POST"
    assert stored(journal) == []


async def test_post_creates_the_node_and_stores_the_reading(client, journal):
    register(journal, "n1", PW, created=False)
    resp = await client.post("/api/nodes/n1", data=body("21.5 40.2"), headers=hdr())
    assert resp.status == 202
    assert journal.node_auth("n1").created
    resp = await client.put("/api/nodes/n1", data=body("21.6 40.3"), headers=hdr())
    assert resp.status == 202
    assert [(r[2], r[3]) for r in stored(journal)] == [(21.5, 40.2), (21.6, 40.3)]


async def test_post_to_an_existing_node_also_stores(client, journal, node):
    assert (await client.post("/api/nodes/n1/", data=body(), headers=hdr())).status == 202
    assert len(stored(journal)) == 1


@pytest.mark.parametrize("halt_one", [True, False])
async def test_halted_node_gets_423_and_the_reading_is_still_stored(client, journal, node, halt_one):
    journal.set_halt("n1" if halt_one else None, True)
    resp = await client.put("/api/nodes/n1", data=body("22 50"), headers=hdr())
    doc = await assert_error(resp, 423, "halted")
    assert doc["stored"] is True and "stored" in doc["detail"]
    assert len(stored(journal)) == 1
    journal.set_halt("n1" if halt_one else None, False)
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 202


async def test_env_halt_gives_423_to_every_node(make_client, journal, node):
    client = await make_client(halt=True)
    resp = await client.put("/api/nodes/n1", data=body(), headers=hdr())
    await assert_error(resp, 423, "halted")
    assert len(stored(journal)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "garbage"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + base64.b64encode(b"n1-without-colon").decode()},
        {"Authorization": "Basic %%%"},
        {"Authorization": " Basic " + auth.xauth("n1", "wrong")},
        {"Authorization": " Basic " + auth.xauth("ghost", PW)},
    ],
    ids=["none", "garbled", "other-scheme", "no-colon", "bad-base64", "wrong-password", "unknown-login"],
)
async def test_missing_or_wrong_credentials_get_401_with_realm(client, journal, node, headers):
    resp = await client.put("/api/nodes/n1", data=body(), headers=headers)
    await assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="tswarm"'
    assert stored(journal) == []


@pytest.mark.parametrize("data, status, error", [
    (5, 400, "bad_data"), ("x y", 400, "bad_data"), ("23.4", 400, "bad_data"),  # the fields come before the name
    ("99 50", 403, "name_mismatch"), ("23.4 101", 403, "name_mismatch"),  # the name before the values
])
async def test_a_wrong_body_name_is_reported_after_the_fields_and_before_the_values(client, journal, node, data, status, error):
    """docs/protocol.md's order: JSON and fields (400), body name (403), values (422)."""
    resp = await client.put("/api/nodes/n1", data=json.dumps({"name": "n2", "data": data}), headers=hdr())
    await assert_error(resp, status, error)
    assert stored(journal) == []


async def test_another_nodes_valid_credentials_get_403(client, journal, node):
    register(journal, "n2", "pw2", created=True)
    resp = await client.put("/api/nodes/n1", data=body(name="n1"), headers=hdr("n2", "pw2"))
    await assert_error(resp, 403, "wrong_node")
    resp = await client.put("/api/nodes/n1", data=body(name="n2"), headers=hdr("n2", "pw2"))
    await assert_error(resp, 403)
    assert stored(journal) == []


async def test_body_name_differing_from_the_url_gets_403(client, journal, node):
    resp = await client.put("/api/nodes/n1", data=body(name="n2"), headers=hdr())
    await assert_error(resp, 403, "name_mismatch")
    assert stored(journal) == []


BAD_400 = {
    "not-json": b"hello",
    "json-array": b"[1,2]",
    "json-string": b'"23 45"',
    "missing-data": b'{"name": "n1"}',
    "missing-name": b'{"data": "23 45"}',
    "data-number": b'{"name": "n1", "data": 23}',
    "one-value": body("23").encode(),
    "empty": body("").encode(),
    "comma-decimals": body("23,4 45,1").encode(),
    "hex": body("0x17 0x2d").encode(),
    "full-width": body("２３ ４５").encode(),
    "line-protocol-smuggling": body("23 45\nclimate,node=n2 temperature=99").encode(),
    "invalid-utf8": b'{"name": "n1", "data": "23 \xff45"}',
    "deeply-nested": b'{"name": "n1", "data": ' + b"[" * 1500 + b"]" * 1500 + b"}",
    "empty-body": b"",
}


@pytest.mark.parametrize("raw", BAD_400.values(), ids=BAD_400.keys())
async def test_malformed_bodies_get_400_and_store_nothing(client, journal, node, raw):
    resp = await client.put("/api/nodes/n1", data=raw, headers=hdr())
    await assert_error(resp, 400)
    assert stored(journal) == []


@pytest.mark.parametrize("data", ["NaN 45", "23 nan", "inf 45", "23 -inf", "1e309 45", "23 101", "23 -1", "81 50", "-41 50"])
async def test_impossible_values_get_422_and_store_nothing(client, journal, node, data):
    resp = await client.put("/api/nodes/n1", data=body(data), headers=hdr())
    await assert_error(resp, 422, "impossible_value")
    assert stored(journal) == []


async def test_a_5mb_body_gets_413(client, journal, node):
    resp = await client.put("/api/nodes/n1", data=b"{" + b" " * 5_000_000 + b"}", headers=hdr())
    await assert_error(resp, 413, "too_large")
    assert stored(journal) == []


async def test_a_chunked_body_over_the_limit_gets_413(client, journal, node):
    async def chunks():
        for _ in range(10):
            yield b" " * 1000

    resp = await client.put("/api/nodes/n1", data=chunks(), headers=hdr())
    await assert_error(resp, 413)


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress), ("GZIP", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some clients send it
    ("identity", lambda b: b),
    ("gzip", lambda b: gzip.compress(b[:10]) + gzip.compress(b[10:])),  # two gzip members: one stream (RFC 1952)
])
async def test_a_compressed_body_that_decodes_is_accepted(make_served, journal, node, encoding, compress):
    """Nodes send plain JSON; a proxy or tool in between may compress it (service/bodies.py decodes gzip and deflate)."""
    client = await make_served()
    resp = await client.put("/api/nodes/n1", data=compress(body("21.5 40").encode()),
                            headers={**hdr(), "Content-Encoding": encoding})
    assert resp.status == 202, await resp.text()
    assert [(r[2], r[3]) for r in stored(journal)] == [(21.5, 40.0)]


@pytest.mark.parametrize("encoding, raw", [
    ("gzip", body().encode()),  # says gzip, is plain JSON
    ("deflate", body().encode()),
    ("gzip", gzip.compress(body().encode(), mtime=0)[:10] + b"\xff" * 20),  # a gzip header, then no valid deflate block
    # cut short: the deflate data whole, the gzip trailer (CRC-32, length) gone or partly: aiohttp took it as whole
    *(("gzip", gzip.compress(body().encode(), mtime=0)[:-cut]) for cut in (1, 4, 8, 9)),
    ("gzip", gzip.compress(body().encode(), mtime=0)[:-20]),  # cut inside the deflate data
    ("deflate", zlib.compress(body().encode())[:-4]),  # the zlib stream without its Adler-32
    ("gzip", gzip.compress(body().encode(), mtime=0) + b"trailing"),  # a whole stream, then bytes that are none
    ("deflate", zlib.compress(body().encode()) + b"\x00"),
    ("br", body().encode()),  # brotli: not decoded here (an optional package), refused either way
    ("zstd", body().encode()),
    ("compress", body().encode()),
    ("x-gzip", gzip.compress(body().encode(), mtime=0)),
    ("gzip, gzip", gzip.compress(gzip.compress(body().encode(), mtime=0), mtime=0)),
    ("foo", body().encode()),
])
async def test_a_body_that_does_not_match_its_content_encoding_gets_a_json_400(make_served, journal, node, encoding, raw):
    client = await make_served()
    resp = await client.put("/api/nodes/n1", data=raw, headers={**hdr(), "Content-Encoding": encoding})
    await assert_error(resp, 400, "bad_encoding")
    assert stored(journal) == []


@pytest.mark.parametrize("lines", [("identity", "gzip"), ("gzip", "gzip"), ("gzip", "identity")])
async def test_two_content_encoding_lines_are_a_list_and_refused(make_served, journal, node, lines):
    """Two header lines mean what one comma-joined line means (RFC 9110 5.3): a list, refused as
    ``gzip, gzip`` is, whichever line aiohttp would decode by."""
    client = await make_served()
    headers = CIMultiDict(hdr())
    for line in lines:
        headers.add("Content-Encoding", line)
    resp = await client.put("/api/nodes/n1", data=gzip.compress(body().encode()), headers=headers)
    await assert_error(resp, 400, "bad_encoding")
    assert stored(journal) == []


async def test_a_large_body_that_does_not_decode_is_a_400_before_its_size(make_served, journal, node):
    """The order of docs/protocol.md: the encoding (400) before the size (413), which is judged by
    what a compressed body decodes to."""
    client = await make_served()
    raw = json.dumps({"x": "a" * 6000}).encode()  # says gzip, is not
    resp = await client.put("/api/nodes/n1", data=raw, headers={**hdr(), "Content-Encoding": "gzip"})
    await assert_error(resp, 400, "bad_encoding")
    resp = await client.put("/api/nodes/n1", data=gzip.compress(raw), headers={**hdr(), "Content-Encoding": "gzip"})
    await assert_error(resp, 413, "too_large")  # it decodes, to more than 4096 bytes
    assert stored(journal) == []


async def test_a_gzip_bomb_gets_413_by_its_size_after_decompression(make_served, journal, node):
    bomb = gzip.compress(b'{"name": "n1", "data": "21.5 40"' + b" " * 4_000_000 + b"}")
    assert len(bomb) < 4096  # the declared length passes; what it inflates to does not
    client = await make_served()
    resp = await client.put("/api/nodes/n1", data=bomb, headers={**hdr(), "Content-Encoding": "gzip"})
    await assert_error(resp, 413, "too_large")
    assert stored(journal) == []


@pytest.mark.parametrize("path", ["/api/nodes/..%2Fetc", "/api/nodes/%2e%2e", "/api/nodes/a%00b", "/api/nodes/" + "x" * 65, "/api/nodes/-x"])
async def test_unsafe_node_names_get_a_json_4xx(client, journal, node, path):
    resp = await client.put(path, data=body(), headers=hdr())
    assert 400 <= resp.status < 500
    await assert_error(resp, resp.status)
    assert stored(journal) == []


async def test_path_traversal_outside_the_api_gets_json_404(client):
    resp = await client.put("/api/nodes/../../etc/passwd", data=body(), headers=hdr())
    assert 400 <= resp.status < 500
    assert resp.content_type == "application/json"


async def test_other_methods_get_json_405(client, node):
    resp = await client.delete("/api/nodes/n1", headers=hdr())
    await assert_error(resp, 405)


async def test_journal_that_cannot_take_the_reading_gets_503_with_retry_after(client, journal, node):
    await client.app[keys.WRITER].close()  # e.g. shutting down: nothing can be stored now
    resp = await client.put("/api/nodes/n1", data=body(), headers=hdr())
    await assert_error(resp, 503, "journal_unavailable")
    assert int(resp.headers["Retry-After"]) > 0
    assert stored(journal) == []


@pytest.mark.engines("postgres")
async def test_postgres_stopped_gets_503_with_retry_after_and_then_recovers(make_client, postgres_factory):
    """PostgreSQL (a private cluster) stops under a running app: the node's lookup cannot be made, so
    a 503, nothing stored; started again, the same app takes readings without a restart."""
    from tswarm.storage import open_storage

    server = postgres_factory()
    url = server.new_database()
    with open_storage("", url) as journal:
        register(journal, "n1", PW, created=True)
    client = await make_client(database_url=url)
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 202
    server.stop()
    resp = await client.put("/api/nodes/n1", data=body(), headers=hdr(password="other"))  # not in the cache
    await assert_error(resp, 503, "journal_unavailable")
    assert int(resp.headers["Retry-After"]) > 0
    server.start()
    assert (await client.put("/api/nodes/n1", data=body("1 2"), headers=hdr())).status == 202
    with open_storage("", url) as journal:
        assert [r[2:] for r in stored(journal)] == [(23.4, 45.1), (1.0, 2.0)]


async def test_too_many_failed_logins_get_429_but_an_already_verified_node_still_passes(make_client, journal, node):
    register(journal, "n2", "pw2", created=True)
    client = await make_client(auth_max_failures=5, auth_window=60)
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 202  # n1's header verified
    bad = hdr(password="nope")
    for _ in range(5):
        assert (await client.put("/api/nodes/n1", data=body(), headers=bad)).status == 401
    for headers, name in ((bad, "n1"), (hdr("n2", "pw2"), "n2")):  # guesses and unverified credentials wait
        resp = await client.put(f"/api/nodes/{name}", data=body(name=name), headers=headers)
        await assert_error(resp, 429, "too_many_failures")
        assert 0 < int(resp.headers["Retry-After"]) <= 60
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 202
    # forwarded headers are not trusted: the same peer stays blocked
    other = await client.put("/api/nodes/n2", data=body(name="n2"), headers={**hdr("n2", "pw2"), "X-Forwarded-For": "192.0.2.7"})
    assert other.status == 429
    assert client.app[keys.GUARD].retry_after("192.0.2.7") == 0  # other addresses are unaffected
    assert len(stored(journal)) == 2


async def test_node_added_removed_or_repassworded_elsewhere_is_seen_on_the_next_request(client, journal):
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 401
    register(journal, "n1", PW, created=True)
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 202
    journal.set_password("n1", auth.hash_password("new-pw", n=TEST_SCRYPT_N))
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr())).status == 401
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr(password="new-pw"))).status == 202
    journal.remove_node("n1")
    assert (await client.put("/api/nodes/n1", data=body(), headers=hdr(password="new-pw"))).status == 401


async def test_no_two_readings_of_a_node_share_a_timestamp(client, journal, node):
    import asyncio

    responses = await asyncio.gather(*(client.put("/api/nodes/n1", data=body(), headers=hdr()) for _ in range(50)))
    assert all(r.status == 202 for r in responses)
    stamps = [r[0] for r in stored(journal)]
    assert len(stamps) == len(set(stamps)) == 50


async def test_healthz_answers_json_once_the_journal_is_open(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["ok"] is True and doc["store"] == "sqlite"


async def test_healthz_answers_while_a_put_waits_for_the_write_lock(client, journal, node, data_dir, monkeypatch):
    """Another process holds the journal's write lock: the PUT waits for its commit, the loop does not."""
    import asyncio

    from .test_pool import Held

    lookup = Held(monkeypatch, "node_auth", type(journal))  # only to know when the PUT has arrived
    lookup.release()
    with write_lock_held(data_dir):
        put = asyncio.ensure_future(client.put("/api/nodes/n1", data=body(), headers=hdr()))
        await lookup.wait_entered()
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["ok"] is True
        assert not put.done()  # its reading cannot commit while the lock is held
    assert (await put).status == 202
    assert len(stored(journal)) == 1


async def test_a_node_lookup_that_waits_leaves_the_loop_free(client, journal, node, monkeypatch):
    """The journal's node lookup (on every PUT) runs in a storage thread: while it waits, /healthz is answered."""
    import asyncio

    from .test_pool import Held

    lookup = Held(monkeypatch, "node_auth", type(journal))
    put = asyncio.ensure_future(client.put("/api/nodes/n1", data=body(), headers=hdr()))
    await lookup.wait_entered()
    health = await client.get("/healthz")
    assert health.status == 200
    assert not put.done()
    lookup.release()
    assert (await put).status == 202
    assert lookup.released == [True]  # it went on because the test let it, after /healthz answered


# -- telemetry, kept readings, the exactly-once key (docs/protocol.md) ----------------------------------


def new_body(data="23.4 45.1", **fields):
    return json.dumps({"name": "n1", "data": data, **fields})


async def test_an_old_body_gets_exactly_todays_answer(client, journal, node):
    resp = await client.put("/api/nodes/n1", data=body(), headers=hdr())
    assert resp.status == 202
    doc = await resp.json()
    assert set(doc) == {"stored", "node", "time", "sleep"} and client.app[keys.STATS].duplicates == 0
    assert [r[1:] for batch in journal.iter_readings(with_extra=True) for r in batch] == [
        ("n1", 23.4, 45.1, None, None, None, None)
    ]


async def test_telemetry_is_stored_with_the_reading_and_the_answer_is_todays(client, journal, node):
    resp = await client.put("/api/nodes/n1", data=new_body(vbat=3.7, rssi=-61, awake_ms=1800, lost=1, boot="a1",
                                                           seq=0), headers=hdr())
    assert resp.status == 202
    assert set(await resp.json()) == {"stored", "node", "time", "sleep"}
    assert [r[1:] for batch in journal.iter_readings(with_extra=True) for r in batch] == [
        ("n1", 23.4, 45.1, 3.7, -61, 1800, 1)
    ]
    [status] = journal.list_nodes()
    assert (status.last_vbat, status.last_rssi, status.last_awake_ms) == (3.7, -61, 1800)


async def test_a_kept_reading_is_stored_with_its_age_taken_off(client, journal, node):
    live = await (await client.put("/api/nodes/n1", data=body(), headers=hdr())).json()
    sent = time.time_ns()
    resp = await client.put("/api/nodes/n1", data=new_body(age=600, boot="a1", seq=1), headers=hdr())
    answered = time.time_ns()
    kept = await resp.json()
    assert resp.status == 202 and kept["time"] < live["time"]
    [(kept_ts, *_), (live_ts, *_)] = stored(journal)
    # its arrival (the commit, between sent and answered) less its age; a loaded machine may take a while
    assert sent - 600 * 10**9 <= kept_ts <= answered - 600 * 10**9 < live_ts


async def test_a_reading_sent_again_is_stored_once_and_answered_202_with_the_same_time(client, journal, node):
    first = await client.put("/api/nodes/n1", data=new_body(boot="a1", seq=7, vbat=3.6), headers=hdr())
    again = await client.put("/api/nodes/n1", data=new_body(boot="a1", seq=7, vbat=3.6), headers=hdr())
    assert first.status == again.status == 202
    one, two = await first.json(), await again.json()
    assert "duplicate" not in one and two == {**one, "duplicate": True}
    assert len(stored(journal)) == 1
    stats = client.app[keys.STATS]
    assert (stats.accepted, stats.duplicates) == (1, 1)
    other = await client.put("/api/nodes/n1", data=new_body(boot="a1", seq=8), headers=hdr())  # the next one
    assert other.status == 202 and "duplicate" not in await other.json() and len(stored(journal)) == 2


async def test_a_halted_node_sending_again_gets_the_same_423(client, journal, node):
    journal.set_halt("n1", True)
    first = await client.put("/api/nodes/n1", data=new_body(boot="a1", seq=1), headers=hdr())
    again = await client.put("/api/nodes/n1", data=new_body(boot="a1", seq=1), headers=hdr())
    one, two = await assert_error(first, 423, "halted"), await assert_error(again, 423, "halted")
    assert two == {**one, "duplicate": True} and len(stored(journal)) == 1


async def test_readings_sent_again_at_once_are_stored_once(client, journal, node):
    import asyncio

    responses = await asyncio.gather(*(client.put("/api/nodes/n1", data=new_body(boot="b", seq=3), headers=hdr())
                                       for _ in range(10)))
    docs = [await r.json() for r in responses]
    assert [r.status for r in responses] == [202] * 10 and len({d["time"] for d in docs}) == 1
    assert sum("duplicate" in d for d in docs) == 9 and len(stored(journal)) == 1


@pytest.mark.parametrize(
    "fields, status",
    [({"vbat": "3.7"}, 400), ({"vbat": True}, 400), ({"rssi": 5}, 422), ({"awake_ms": -1}, 422),
     ({"age": 2_592_001}, 422), ({"seq": 1}, 400), ({"boot": "b"}, 400), ({"boot": "", "seq": 1}, 400),
     ({"lost": 1.5}, 400), ({"boot": "b", "seq": 2**31}, 422), ({"vbat": None}, 400)],
)
async def test_a_bad_field_gets_a_json_4xx_naming_it_and_stores_nothing(client, journal, node, fields, status):
    resp = await client.put("/api/nodes/n1", data=new_body(**fields), headers=hdr())
    doc = await assert_error(resp, status, "bad_field" if status == 400 else "impossible_value")
    named = next(key for key in fields if key != "boot" or len(fields) == 1 or fields["boot"] == "")
    assert named in doc["detail"] and stored(journal) == []


async def test_the_202_and_423_bodies_and_headers_are_those_json_response_made(client, journal, node):
    """The answers of a stored reading are built from one json.dumps (service/protocol.py ``_answer``):
    byte for byte the body, and the Content-Type, that ``web.json_response`` / ``json_error`` gave."""
    from aiohttp import web

    from tswarm.errors import json_error

    register(journal, "n2", PW, created=True)
    resp = await client.put("/api/nodes/n2", data=body(name="n2"), headers=hdr("n2"))
    doc = await resp.json()
    old = web.json_response({"stored": True, "node": "n2", "time": doc["time"], "sleep": doc["sleep"]}, status=202)
    assert resp.status == 202 and await resp.read() == old.body
    assert resp.headers["Content-Type"] == old.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["Content-Length"] == str(len(old.body))

    journal.set_halt("n1", True)
    resp = await client.put("/api/nodes/n1", data=body(), headers=hdr())
    doc = await resp.json()
    old = json_error(423, "halted", doc["detail"], stored=True, time=doc["time"], sleep=doc["sleep"], awake=doc["awake"])
    assert resp.status == 423 and await resp.read() == old.body
    assert resp.headers["Content-Type"] == old.headers["Content-Type"]


@settings(max_examples=500)
@given(
    name=st.from_regex(NODE_NAME, fullmatch=True),
    ts=st.integers(MIN_NS, MAX_NS),
    sleep=st.integers(),
)
def test_a_plain_202s_body_is_byte_for_byte_what_json_dumps_gives(name, ts, sleep):
    """service/protocol.py ``stored_body``: the plain 202 from one format, the bytes json.dumps gave."""
    from tswarm.protocol import stored_body

    doc = {"stored": True, "node": name, "time": rfc3339(ts), "sleep": sleep}
    assert stored_body(name, ts, sleep) == json.dumps(doc).encode()


async def test_a_firmware_fetch_404_quotes_at_most_a_short_piece_of_the_version_or_file_asked_for(client, journal, node):
    """service/firmware_routes.py: the path's version and file name are a client's, up to 8 KB of them;
    the 404's detail quotes 40 characters of each, as every other detail that quotes a request."""
    from tswarm import bundles

    files = [("node.py", b"print('hi')\n")]
    version = bundles.version_of(files)
    journal.add_bundle(version, bundles.check_files(files), 0)
    journal.stage_bundle(version, ["n1"], 0)
    long = "v" * 4000
    doc = await assert_error(await client.get(f"/api/nodes/n1/firmware/{long}/node.py", headers=hdr()), 404, "not_staged")
    assert f"'{'v' * 40}'..." in doc["detail"] and long not in doc["detail"]
    doc = await assert_error(await client.get(f"/api/nodes/n1/firmware/{version}/{long}", headers=hdr()), 404, "no_such_file")
    assert f"'{'v' * 40}'..." in doc["detail"] and long not in doc["detail"]
    resp = await client.get(f"/api/nodes/n1/firmware/{version}/node.py", headers=hdr())
    assert resp.status == 200 and await resp.read() == b"print('hi')\n"
