"""Who may read: the kept read token (no TSWARM_READ_TOKEN), the page's cookie, loopback (service/access.py).

aiohttp's test client connects from 127.0.0.1; a client on the LAN is a request through a trusted
proxy (TSWARM_TRUSTED_PROXIES=127.0.0.1) with X-Forwarded-For, which is what service/proxy.py makes
of it: ``request.remote`` is the LAN address and the request is not loopback.
"""
from __future__ import annotations

import pytest

from tswarm.access import COOKIE
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


async def test_the_cookie_never_administers(make_client, kept):
    client = await lan_client(make_client, admin_token="admin-token")
    client.session.cookie_jar.update_cookies({COOKIE: kept})
    resp = await client.post("/api/admin/halt", headers=LAN)
    assert resp.status == 401
    resp = await client.post("/api/admin/halt", headers={**LAN, "Authorization": f"Bearer {kept}"})
    assert (resp.status, (await resp.json())["error"]) == (403, "read_only")


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
