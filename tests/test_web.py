"""The status page's own routes: ``/?token=`` sets the reader cookie; the token never reaches the log
(service/web.py). A client on the LAN is a request through a trusted proxy, as in tests/test_access.py."""
from __future__ import annotations

import logging

import pytest

from tswarm.access import COOKIE
from tswarm.tokens import kept_read_token

from .conftest import test_config

pytestmark = pytest.mark.engines

LAN = {"X-Forwarded-For": "192.168.1.77"}


@pytest.fixture
def kept(tmp_path):
    """The token the service keeps (the data dir's file on SQLite, the database's on PostgreSQL)."""
    return kept_read_token(test_config(tmp_path))[0]


async def lan_client(make_client, **changes):
    return await make_client(trusted_proxies=("127.0.0.1",), **changes)


async def test_the_token_link_sets_the_cookie_and_redirects_to_the_page_without_it(make_client, kept):
    client = await lan_client(make_client)
    resp = await client.get(f"/?refresh=5&token={kept}", headers=LAN, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/?refresh=5"
    assert resp.headers["Referrer-Policy"] == "no-referrer" and resp.headers["Cache-Control"] == "no-store"
    cookie = resp.cookies[COOKIE]
    assert cookie.value == kept
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP on the LAN: a Secure cookie would never come back
    assert int(cookie["max-age"]) > 30 * 86400
    # The browser follows: the page, then its readers with the cookie alone.
    page = await client.get("/?refresh=5", headers=LAN)
    assert page.status == 200 and page.content_type == "text/html"
    assert (await client.get("/api/nodes", headers=LAN)).status == 200


async def test_the_token_link_over_https_sets_a_secure_cookie(make_client, kept):
    client = await lan_client(make_client)
    resp = await client.get(f"/?token={kept}", headers={**LAN, "X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    assert resp.cookies[COOKIE]["secure"] is True


async def test_a_configured_read_token_works_in_the_link_too(make_client):
    client = await lan_client(make_client, read_token="configured-token")
    resp = await client.get("/?token=configured-token", headers=LAN, allow_redirects=False)
    assert resp.status == 303 and resp.cookies[COOKIE].value == "configured-token"


async def test_a_wrong_token_in_the_link_is_a_failed_login(make_client, kept):
    client = await lan_client(make_client, auth_max_failures=2, admin_token="admin-token")
    for guess in ("guess", "admin-token"):  # the admin token never goes into a cookie
        resp = await client.get(f"/?token={guess}", headers=LAN, allow_redirects=False)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Bearer realm="tswarm"'  # as every 401
        assert (await resp.json())["error"] == "unauthorized"
        assert COOKIE not in resp.cookies
        assert guess not in await resp.text()
    blocked = await client.get(f"/?token={kept}", headers=LAN, allow_redirects=False)
    assert blocked.status == 429 and COOKIE not in blocked.cookies


async def test_the_access_log_never_shows_the_token(make_client, kept, caplog):
    client = await lan_client(make_client, access_log=True)
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        await client.get(f"/?token={kept}", headers={**LAN, "Referer": f"http://pi/?token={kept}"}, allow_redirects=False)
        await client.get("/?token=guess&refresh=5", headers=LAN, allow_redirects=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 2
    assert kept not in caplog.text and "guess" not in caplog.text
    assert "GET /?token=*** HTTP/1.1" in lines[0]
    assert "GET /?token=***&refresh=5 HTTP/1.1" in lines[1]
    for record in caplog.records:
        assert kept not in str(record.__dict__)


async def test_the_status_page_and_its_files_are_served_without_a_token(make_client):
    client = await make_client(read_token="read-token-0123456789")
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    html = await resp.text()
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/uplot/uPlot.iife.min.js", "/static/vendor/uplot/uPlot.min.css"):
        assert path in html
        assert (await client.get(path)).status == 200
    assert "http" not in html.replace('href="/', "").split("<footer>")[0]  # nothing from another site
    assert (await client.get("/static/vendor/uplot/LICENSE")).status == 200


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/.hidden", "/static/style.css/x", "/static/vendor", "/static/%2e%2e/app.py"])
async def test_a_file_the_page_does_not_have_is_a_json_404(make_client, path):
    client = await make_client()
    resp = await client.get(path)
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["error"] == "not_found"



async def test_the_token_link_keeps_the_rest_of_the_query_percent_encoded_in_the_redirect(make_client, kept):
    """The Location header carries the other parameters as sent: decoded, a %0D%0A was a 500 (aiohttp
    refuses a header with a line break) and a %E2%82%AC went out as raw UTF-8 bytes."""
    client = await lan_client(make_client)
    resp = await client.get(f"/?token={kept}&x=%0D%0ASet-Cookie:%20a=1&y=%E2%82%AC", headers=LAN, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/?x=%0D%0ASet-Cookie:+a%3D1&y=%E2%82%AC"
    assert "a" not in resp.cookies and resp.cookies[COOKIE].value == kept
