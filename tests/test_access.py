"""Who may read and who may administer (service/access.py): loopback without a token, the configured read
and admin tokens, node credentials refused on reader routes, the guard against guessing, the kept read
token (no TSWARM_READ_TOKEN) and the page's cookie.

aiohttp's test client connects from 127.0.0.1; a client on the LAN is a request through a trusted
proxy (TSWARM_TRUSTED_PROXIES=127.0.0.1) with X-Forwarded-For, which is what service/proxy.py makes
of it: ``request.remote`` is the LAN address and the request is not loopback.
"""
from __future__ import annotations

import base64

import pytest

from tswarm.access import COOKIE, is_loopback_client
from tswarm.tokens import ensure_read_token, load_read_token

from .conftest import register

LAN = {"X-Forwarded-For": "192.168.1.77"}
READERS = ["/api/nodes", "/api/readings"]


@pytest.fixture
def kept(data_dir):
    """The token `tswarm serve` made in the data dir."""
    token, created = ensure_read_token(data_dir)
    assert created
    return token


@pytest.fixture
def node(journal):
    register(journal, "kitchen", created=True)


async def lan_client(make_client, **changes):
    return await make_client(trusted_proxies=("127.0.0.1",), **changes)


@pytest.mark.parametrize("path", READERS)
async def test_without_a_configured_token_the_kept_token_lets_the_lan_read(make_client, kept, node, path):
    client = await lan_client(make_client)
    assert (await client.get(path, headers=LAN)).status == 401
    assert (await client.get(path, headers={**LAN, "Authorization": f"Bearer {kept}"})).status == 200
    client.session.cookie_jar.update_cookies({COOKIE: kept})
    assert (await client.get(path, headers=LAN)).status == 200


@pytest.mark.parametrize("path", READERS)
async def test_loopback_still_reads_without_a_token_when_the_token_is_kept(make_client, kept, node, path):
    client = await make_client()
    assert (await client.get(path)).status == 200


async def test_the_service_makes_the_kept_token_when_serve_did_not(make_client, data_dir, node):
    client = await lan_client(make_client)
    token = load_read_token(data_dir)
    assert token
    assert (await client.get("/api/nodes", headers={**LAN, "Authorization": f"Bearer {token}"})).status == 200


async def test_a_configured_token_wins_over_the_kept_one_and_loopback_needs_it(make_client, kept, node):
    client = await make_client(read_token="configured-token")
    assert (await client.get("/api/nodes")).status == 401
    assert (await client.get("/api/nodes", headers={"Authorization": f"Bearer {kept}"})).status == 401
    client.session.cookie_jar.update_cookies({COOKIE: "configured-token"})
    assert (await client.get("/api/nodes")).status == 200


async def test_a_wrong_cookie_is_a_failed_login_and_is_cleared(make_client, kept, node):
    client = await lan_client(make_client, auth_max_failures=2)
    client.session.cookie_jar.update_cookies({COOKIE: "guess"})
    first = await client.get("/api/nodes", headers=LAN)
    assert first.status == 401
    assert (await first.json())["error"] == "unauthorized"
    assert first.cookies[COOKIE].value == "" and first.cookies[COOKIE]["max-age"] == "0"
    client.session.cookie_jar.update_cookies({COOKIE: "guess2"})
    assert (await client.get("/api/nodes", headers=LAN)).status == 401
    blocked = await client.get("/api/nodes", headers={**LAN, "Authorization": f"Bearer {kept}"})
    assert blocked.status == 429 and "Retry-After" in blocked.headers
    other = await client.get("/api/nodes", headers={"X-Forwarded-For": "192.168.1.78", "Authorization": f"Bearer {kept}"})
    assert other.status == 200  # the guard counts the LAN client, not the proxy


@pytest.mark.parametrize("path", READERS)
async def test_a_stale_cookie_from_loopback_is_refused_and_cleared_too(make_client, kept, node, path):
    """docs/api.md's table: a cookie with anything but the read token is a 401 that deletes it, from
    loopback too (before, loopback was served and the stale cookie kept for ever); without it
    loopback reads again."""
    client = await make_client()
    client.session.cookie_jar.update_cookies({COOKIE: "stale"})
    first = await client.get(path)
    assert first.status == 401 and first.cookies[COOKIE]["max-age"] == "0"
    client.session.cookie_jar.clear()  # as a browser does on Max-Age=0 (the test jar keeps a cookie it was handed)
    assert (await client.get(path)).status == 200


async def test_the_cookie_never_administers(make_client, kept):
    client = await lan_client(make_client, admin_token="admin-token")
    client.session.cookie_jar.update_cookies({COOKIE: kept})
    resp = await client.post("/api/admin/halt", headers=LAN)
    assert resp.status == 401
    resp = await client.post("/api/admin/halt", headers={**LAN, "Authorization": f"Bearer {kept}"})
    assert (resp.status, (await resp.json())["error"]) == (403, "read_only")


# -- the configured tokens, and loopback without one -----------------------------------------------

READ, ADMIN = "read-token-0123456789", "admin-token-0123456789"


@pytest.mark.parametrize("path", READERS)
async def test_without_a_read_token_loopback_clients_may_read(make_client, three_nodes, path):
    client = await make_client()
    assert (await client.get(path)).status == 200



@pytest.mark.parametrize("path", READERS)
async def test_without_a_read_token_proxied_requests_are_not_loopback(make_client, three_nodes, path):
    client = await make_client()
    resp = await client.get(path, headers={"X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="tswarm"'
    assert (await resp.json())["error"] == "unauthorized"



@pytest.mark.parametrize("path", READERS)
async def test_with_a_read_token_unauthorised_reads_get_401(make_client, three_nodes, path):
    client = await make_client(read_token=READ, admin_token=ADMIN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token " + READ}):
        resp = await client.get(path, headers=headers)
        assert resp.status == 401, headers
        assert (await resp.json())["error"] == "unauthorized"
        assert READ not in await resp.text()



@pytest.mark.parametrize("path", READERS)
async def test_the_read_token_and_the_admin_token_may_read(make_client, three_nodes, path):
    client = await make_client(read_token=READ, admin_token=ADMIN)
    for token in (READ, ADMIN):
        assert (await client.get(path, headers={"Authorization": f"Bearer {token}"})).status == 200
    assert (await client.get(path, headers={"Authorization": f"  bearer   {READ} "})).status == 200



@pytest.mark.parametrize("path", READERS)
@pytest.mark.parametrize("read_token", ["", READ])
async def test_node_credentials_get_403_on_reader_routes(make_client, three_nodes, path, read_token):
    client = await make_client(read_token=read_token)
    resp = await client.get(path, headers={"Authorization": " Basic " + base64.b64encode(b"kitchen:secret-pw").decode()})
    assert resp.status == 403
    assert (await resp.json())["error"] == "node_credentials"



async def test_guessing_tokens_gets_429(make_client, three_nodes):
    client = await make_client(read_token=READ, auth_max_failures=3)
    statuses = [(await client.get("/api/nodes", headers={"Authorization": f"Bearer guess{i}"})).status for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert (await client.get("/api/nodes", headers={"Authorization": f"Bearer {READ}"})).status == 429



def test_loopback_means_the_peer_and_no_proxy():
    from aiohttp.test_utils import make_mocked_request

    def req(remote, **headers):
        request = make_mocked_request("GET", "/api/nodes", headers=headers)
        return request.clone(remote=remote)

    assert is_loopback_client(req("127.0.0.1"))
    assert is_loopback_client(req("127.8.0.1"))
    assert is_loopback_client(req("::1"))
    assert not is_loopback_client(req("192.0.2.7"))
    assert not is_loopback_client(req("2001:db8::1"))
    assert not is_loopback_client(req(None))
    assert not is_loopback_client(req("127.0.0.1", **{"X-Forwarded-For": "192.0.2.7"}))
    assert not is_loopback_client(req("127.0.0.1", Forwarded="for=192.0.2.7"))


async def test_the_429_is_the_same_answer_for_node_credentials_and_tokens(make_client, journal):
    """One builder (service/auth.py's too_many_failures) for the node protocol's and the readers' 429."""
    from tswarm import auth, keys

    client = await make_client(read_token="read-token-0123456789", auth_max_failures=1)
    client.app[keys.GUARD].failed("127.0.0.1")
    put = await client.put("/api/nodes/n1", data="{}", headers={"Authorization": " Basic " + auth.xauth("n1", "x")})
    get = await client.get("/api/nodes", headers={"Authorization": "Bearer wrong"})
    assert put.status == get.status == 429
    assert put.headers["Retry-After"] == get.headers["Retry-After"]
    assert await put.json() == await get.json() == {
        "error": "too_many_failures",
        "detail": f"too many failed logins from this address; retry in {put.headers['Retry-After']} s",
    }


@pytest.mark.parametrize("header, cookie", [(b"Bearer \xff\xfe", None), (None, b"\xff\xfeX")])
async def test_a_token_that_is_not_utf_8_is_a_401_not_a_500(make_client, kept, header, cookie):
    """aiohttp hands such header bytes over as surrogate escapes; they are a wrong token like any other."""
    import asyncio

    client = await lan_client(make_client)
    line = b"Authorization: " + header if header else b"Cookie: " + COOKIE.encode() + b"=" + cookie
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /api/nodes HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.168.1.77\r\n" + line
                 + b"\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
