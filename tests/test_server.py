"""The HTTP server under the app (service/server.py): what aiohttp answers before any middleware (a
request its parser refuses, an unknown Expect) is JSON, quotes none of the request's bytes, is
logged in one line without them and is counted in /metrics; the access log masks secret query values.

Requests go over a real loopback socket to the app served by ``server.AppRunner`` (aiohttp's test
server with the service's runner), byte for byte as written here."""
from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest
from aiohttp import web

from tswarm import auth
from tswarm.app import create_app

from .conftest import ServiceTestServer, register, test_config
from .test_metrics import samples

PW = "secret-pw"
SECRET = "Zq7-Secret-Of-The-Node"  # a recognisable password, token and header value
SECRET_B64 = base64.b64encode(f"n1:{SECRET}".encode())


@pytest.fixture
def make_served(make_client):
    """``await make_served(**config_changes)`` -> a test client of the app as `tswarm serve` serves it
    (every ``make_client`` is: tests/conftest.py ``ServiceTestServer``)."""
    return make_client


async def raw(client, data: bytes, then: bytes | None = None) -> bytes:
    """Send ``data`` on a new connection (and ``then`` after the first answer), return all answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(data)
        if then is not None:
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(then)
            return first + await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def answer(data: bytes) -> tuple[int, dict, bytes]:
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, payload


AUTH = b"Authorization: Basic " + SECRET_B64 + b"\r\n"
REQ = b"PUT /api/nodes/n1?token=" + SECRET.encode() + b" HTTP/1.1\r\nHost: x\r\n" + AUTH
MALFORMED = {
    "bad request line": b"GARBAGE " + SECRET.encode() + b"\r\n" + AUTH + b"\r\n",
    "bad method": b"P@T /api/nodes/" + SECRET.encode() + b" HTTP/1.1\r\n" + AUTH + b"\r\n",
    "bad version": b"PUT /api/nodes/n1 HTTP/" + SECRET.encode() + b"\r\n" + AUTH + b"\r\n",
    "header without colon": REQ + b"NoColon" + SECRET.encode() + b"\r\n\r\n",
    "control character in a header": REQ + b"X-Secret: " + SECRET.encode() + b"\x01\r\n\r\n",
    "control character in Authorization": b"PUT /api/nodes/n1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
    + SECRET_B64 + b"\x7f\r\n\r\n",
    "header longer than 8190 bytes": REQ + b"X-Long: " + SECRET.encode() * 500 + b"\r\n\r\n",
    "URL longer than 8190 bytes": b"PUT /api/nodes/" + SECRET.encode() * 500 + b" HTTP/1.1\r\n" + AUTH + b"\r\n",
    "too many headers": REQ + b"".join(b"X-%d: %s\r\n" % (i, SECRET.encode()) for i in range(200)) + b"\r\n",
    "invalid chunk size": REQ + b"Transfer-Encoding: chunked\r\n\r\n" + SECRET.encode() + b"\r\nabc\r\n0\r\n\r\n",
    "two Content-Lengths": REQ + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length and chunked": REQ + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SECRET.encode() + b"\r\n\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_gets_a_json_400_that_quotes_none_of_its_bytes(make_served, journal, caplog, data):
    register(journal, "n1", SECRET, created=True)
    client = await make_served()
    caplog.set_level(logging.DEBUG)
    status, headers, payload = answer(await raw(client, data))
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(payload)
    assert doc["error"] in ("bad_request", "bad_encoding") and doc["detail"]
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") + str(r.exc_text or "") for r in caplog.records)
    for secret in (SECRET.encode(), SECRET_B64):
        assert secret not in payload
        assert secret.decode() not in logged
    refused = [r for r in caplog.records if r.name == "tswarm.server"]
    assert len(refused) == 1 and refused[0].levelno == logging.INFO and not refused[0].exc_info, logged
    assert not [r for r in caplog.records if r.name == "aiohttp.server"], logged


@pytest.mark.parametrize("line, status", [
    (b"PUT /api/nodes/n1", 400),  # no version: aiohttp's parser takes it as HTTP/0.9
    (b"PUT /api/nodes/n1 HTTP/2.0", 400),  # HTTP/2 is not spoken in text
    (b"PUT /api/nodes/n1 HTTP/1.0", 202),
])
async def test_a_request_line_of_another_http_than_1_0_and_1_1_gets_a_json_400(make_served, journal, line, status):
    register(journal, "n1", PW, created=True)
    client = await make_served()
    body = json.dumps({"name": "n1", "data": "21.5 40"}).encode()
    data = (line + b"\r\nHost: x\r\nAuthorization: Basic " + auth.xauth("n1", PW).encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    got, headers, payload = answer(await raw(client, data))
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    if status == 400:
        assert json.loads(payload)["error"] == "bad_request" and headers["Connection"] == "close"
        assert list(journal.iter_readings()) == []
    else:
        assert [(r[2], r[3]) for batch in journal.iter_readings() for r in batch] == [(21.5, 40.0)]


BROKEN_CHUNKS = {
    "invalid chunk size": b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk without its CRLF": b"2\r\n{}0\r\n\r\n",
    "chunk size too large": b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("body, parser", [
    *((body, "C") for body in BROKEN_CHUNKS.values()),
    # aiohttp's pure-Python parser (no C extension: AIOHTTP_NO_EXTENSIONS) reads a huge chunk size
    # as a chunk still to come, not as an error: only these two break its framing
    *((BROKEN_CHUNKS[name], "pure Python") for name in ("invalid chunk size", "chunk without its CRLF")),
], ids=[*(f"C-{name}" for name in BROKEN_CHUNKS), "pure Python-invalid chunk size", "pure Python-chunk without its CRLF"])
async def test_a_chunk_that_breaks_after_the_headers_gets_a_json_400_at_once(make_served, journal, monkeypatch, body, parser):
    """The headers arrive first, the broken chunk in a later packet, while the handler already waits
    for the body: aiohttp's C parser queued its error behind the request and never ended its body, so
    the request hung until the client gave up; its pure-Python parser raised its own error into the
    handler, a 500. Both now get the 400 of a body that breaks in the first packet."""
    if parser == "pure Python":
        from aiohttp import http_parser, web_protocol

        monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    register(journal, "n1", SECRET, created=True)
    client = await make_served()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"PUT /api/nodes/n1 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body by now
        writer.write(body)
        status, headers, payload = answer(await asyncio.wait_for(reader.read(), 5))
    finally:
        writer.close()
    assert status == 400 and headers["Connection"] == "close"
    assert json.loads(payload)["error"] == "bad_body"
    assert list(journal.iter_readings()) == []


async def test_a_chunked_reading_that_comes_in_pieces_is_stored(make_served, journal):
    """The same request with whole chunks: the check above leaves a good body alone."""
    register(journal, "n1", SECRET, created=True)
    client = await make_served()
    body = b'{"name": "n1", "data": "21.5 40"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"PUT /api/nodes/n1 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"%x\r\n%s\r\n" % (len(body) - 5, body[:-5]))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"5\r\n%s\r\n0\r\n\r\n" % body[-5:])
        status, _, _ = answer(await asyncio.wait_for(reader.readuntil(b"}"), 5))
    finally:
        writer.close()
    assert status == 202
    assert [(r[2], r[3]) for batch in journal.iter_readings() for r in batch] == [(21.5, 40.0)]


@pytest.mark.parametrize("data, named", [
    (REQ + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", "Transfer-Encoding cannot be present with Content-Length"),
    (REQ + b"Transfer-Encoding: bogus\r\n\r\n", "Request has invalid Transfer-Encoding"),
    (REQ + b"Connection: close\r\n\r\n" + SECRET.encode(), "Data after Connection: close"),
    (b"PUT /api/nodes/n1 HTTP/1.1\r\n" + AUTH + b"\r\n", "Missing Host header in request"),
])
async def test_a_malformed_requests_detail_names_its_problem(make_served, journal, data, named):
    """The parser's own words up to the request's bytes, with the names it quotes itself unquoted."""
    client = await make_served()
    status, _, payload = answer(await raw(client, data))
    assert status == 400
    assert json.loads(payload)["detail"] == f"{named}; this is not a valid HTTP/1.1 request"
    assert SECRET.encode() not in payload and SECRET_B64 not in payload


async def test_an_unknown_expect_gets_a_json_417(make_served, journal, caplog):
    register(journal, "n1", PW, created=True)
    client = await make_served()
    body = json.dumps({"name": "n1", "data": "21.5 40"}).encode()
    data = (b"PUT /api/nodes/n1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth.xauth("n1", PW).encode()
            + b"\r\nExpect: " + SECRET.encode() + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    status, headers, payload = answer(await raw(client, data))
    assert status == 417 and headers["Content-Type"].startswith("application/json")
    assert json.loads(payload) == {"error": "expectation_failed",
                                   "detail": "the only expectation understood is 'Expect: 100-continue'"}
    assert SECRET not in caplog.text
    assert list(journal.iter_readings()) == []


async def test_expect_100_continue_gets_its_continue_and_the_reading_is_stored(make_served, journal):
    """As curl sends bodies over 1 KiB: headers, wait for 100 Continue, then the body."""
    register(journal, "n1", PW, created=True)
    client = await make_served()
    body = json.dumps({"name": "n1", "data": "21.5 40"}).encode()
    head = (b"PUT /api/nodes/n1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth.xauth("n1", PW).encode()
            + b"\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
    out = await raw(client, head, then=body)
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    status, _, payload = answer(out[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
    assert status == 202 and json.loads(payload)["stored"] is True
    assert [(r[1], r[2], r[3]) for batch in journal.iter_readings() for r in batch] == [("n1", 21.5, 40.0)]


async def test_answers_made_below_the_middlewares_are_counted_once_in_metrics(make_served, journal):
    client = await make_served()
    await raw(client, MALFORMED["header without colon"])
    await raw(client, b"PUT /api/nodes/n1 HTTP/1.1\r\nHost: x\r\nExpect: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert (await client.get("/nope")).status == 404
    m = samples(await (await client.get("/metrics")).text())
    assert m[("tswarm_http_requests_total", frozenset({("route", "unmatched"), ("status", "400")}))] == 1
    assert m[("tswarm_http_requests_total", frozenset({("route", "/api/nodes/{name}"), ("status", "417")}))] == 1
    assert m[("tswarm_http_requests_total", frozenset({("route", "unmatched"), ("status", "404")}))] == 1


async def test_the_access_log_masks_secret_query_values_and_writes_no_referer(make_served, caplog):
    client = await make_served(access_log=True)
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    resp = await client.get(f"/nope?node=n1&token={SECRET}&Api-Key={SECRET}",
                            headers={"Referer": f"http://x/?token={SECRET}", "User-Agent": SECRET})
    assert resp.status == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 1
    assert '"GET /nope?node=n1&token=***&Api-Key=*** HTTP/1.1" 404' in lines[0]
    assert SECRET not in caplog.text
    # the names as the app reads them, sent as written (a client library would normalise them)
    await raw(client, f"GET /nope?tok%65n={SECRET}&pass+word={SECRET} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert '"GET /nope?tok%65n=***&pass+word=*** HTTP/1.1" 404' in lines[-1]
    assert SECRET not in caplog.text
    # short and other names for a password or a credential (before: pw, pwd and credential were written)
    resp = await client.get(f"/nope?pw={SECRET}&pwd={SECRET}&credential={SECRET}&session_id={SECRET}&node=n1")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert '"GET /nope?pw=***&pwd=***&credential=***&session_id=***&node=n1 HTTP/1.1" 404' in lines[-1]
    assert SECRET not in caplog.text


async def test_by_default_a_reading_writes_no_access_line_and_metrics_still_count_it(make_served, journal, caplog):
    register(journal, "n1", PW, created=True)
    client = await make_served()
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    resp = await client.put("/api/nodes/n1", json={"name": "n1", "data": "21.5 40"},
                            headers={"Authorization": " Basic " + auth.xauth("n1", PW)})
    assert resp.status == 202
    assert (await client.get("/nope")).status == 404
    m = samples(await (await client.get("/metrics")).text())
    assert [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"] == []
    assert m[("tswarm_http_requests_total", frozenset({("route", "/api/nodes/{name}"), ("status", "202")}))] == 1
    assert m[("tswarm_http_requests_total", frozenset({("route", "unmatched"), ("status", "404")}))] == 1


async def test_with_the_access_log_on_a_reading_writes_one_access_line(make_served, journal, caplog):
    register(journal, "n1", PW, created=True)
    client = await make_served(access_log=True)
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    resp = await client.put("/api/nodes/n1", json={"name": "n1", "data": "21.5 40"},
                            headers={"Authorization": " Basic " + auth.xauth("n1", PW)})
    assert resp.status == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 1 and '"PUT /api/nodes/n1 HTTP/1.1" 202' in lines[0]


async def test_a_body_over_client_max_size_on_another_route_gets_a_json_413(make_served):
    """The admin API reads its body with aiohttp's request.json(), which stops at client_max_size."""
    client = await make_served(admin_token="admin-token-0123456789")
    resp = await client.post("/api/admin/nodes", data=b"{" + b" " * 100_000 + b"}",
                             headers={"Authorization": "Bearer admin-token-0123456789", "Content-Type": "application/json"})
    assert resp.status == 413 and resp.content_type == "application/json"
    assert (await resp.json())["error"] == "too_large"


async def test_a_handler_s_own_plain_text_error_answer_goes_out_as_json(aiohttp_client, tmp_path):
    """Below the middlewares too: a 4xx/5xx that is not JSON (from a route of the test's own that
    returns one, as a library's handler might) is sent as {"error", "detail"}, its other headers kept."""
    app = create_app(test_config(tmp_path))

    async def plain(request):
        return web.Response(status=409, text="plain text", headers={"X-Kept": "yes"})

    app.router.add_get("/plain", plain)
    client = await aiohttp_client(ServiceTestServer(app))
    resp = await client.get("/plain")
    assert resp.status == 409 and resp.content_type == "application/json" and resp.headers["X-Kept"] == "yes"
    assert await resp.json() == {"error": "conflict", "detail": "Conflict"}
