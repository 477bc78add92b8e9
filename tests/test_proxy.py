"""Behind a TLS proxy: X-Forwarded-* only from trusted proxies, the page to HTTPS, the node API never redirected.

aiohttp's test client connects from 127.0.0.1, so "a trusted proxy" is TSWARM_TRUSTED_PROXIES=127.0.0.1
and "an untrusted peer" is any list without it.
"""
import json

import pytest

from tswarm import auth
from tswarm.proxy import client_address, parse_networks
from tswarm.settings import Config, ConfigError

from .conftest import register

PW = "secret-pw"
PAGE_AND_STATIC = ["/", "/static/app.js"]


def node_headers(password=PW, client=None, proto=None):
    headers = {"Authorization": " Basic %s" % auth.xauth("n1", password), "Content-Type": "application/json"}
    if client:
        headers["X-Forwarded-For"] = client
    if proto:
        headers["X-Forwarded-Proto"] = proto
    return headers


BODY = json.dumps({"name": "n1", "data": "23.4 45.1"})


@pytest.fixture
def node(journal):
    register(journal, "n1", PW, created=True)


async def fail_logins(http, times, **header_args):
    for _ in range(times):
        resp = await http.put("/api/nodes/n1", data=BODY, headers=node_headers("wrong", **header_args))
        assert resp.status == 401


# -- whose address the brute-force guard counts --------------------------------------------------


async def test_forwarded_for_from_an_untrusted_peer_is_ignored_by_the_guard(make_client, node):
    client = await make_client(trusted_proxies=("10.0.0.0/8",), auth_max_failures=3)
    # A guesser cannot dodge the guard by claiming a new address with each request.
    for n in range(3):
        await fail_logins(client, 1, client=f"198.51.100.{n}")
    resp = await client.put("/api/nodes/n1", data=BODY, headers=node_headers("wrong", client="198.51.100.99"))
    assert resp.status == 429


async def test_behind_a_trusted_proxy_the_guard_counts_each_real_client(make_client, node):
    client = await make_client(trusted_proxies=("127.0.0.1",), auth_max_failures=3)
    await fail_logins(client, 3, client="203.0.113.7")
    blocked = await client.put("/api/nodes/n1", data=BODY, headers=node_headers("wrong", client="203.0.113.7"))
    assert blocked.status == 429
    # Another client behind the same proxy is not blocked, and a valid node through the proxy stores.
    other = await client.put("/api/nodes/n1", data=BODY, headers=node_headers("wrong", client="203.0.113.8"))
    assert other.status == 401
    ok = await client.put("/api/nodes/n1", data=BODY, headers=node_headers(client="203.0.113.8"))
    assert ok.status == 202


async def test_without_trusted_proxies_the_guard_counts_the_tcp_peer(make_client, node):
    client = await make_client(auth_max_failures=2)
    await fail_logins(client, 1, client="203.0.113.1")
    await fail_logins(client, 1, client="203.0.113.2")
    resp = await client.put("/api/nodes/n1", data=BODY, headers=node_headers("wrong", client="203.0.113.3"))
    assert resp.status == 429


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),  # spoofed left part is not believed
        ("127.0.0.1", ["203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # past a second trusted proxy
        ("127.0.0.1", ["10.1.2.3, 10.4.5.6"], "10.1.2.3"),  # every hop trusted: the left-most
        ("127.0.0.1", ["203.0.113.7", "10.1.2.3"], "203.0.113.7"),  # the header twice
        ("127.0.0.1", ["not-an-ip, 10.1.2.3"], "10.1.2.3"),  # garbage: trust nothing further left
        ("127.0.0.1", [], "127.0.0.1"),  # the proxy itself (e.g. its health check)
        ("192.0.2.50", ["203.0.113.7"], "192.0.2.50"),  # untrusted peer: header ignored
        ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # IPv4-mapped peer
    ],
)
def test_client_address(peer, forwarded, expected):
    assert client_address(peer, forwarded, parse_networks("127.0.0.1, 10.0.0.0/8")) == expected


def test_trusted_proxies_must_be_addresses_or_networks():
    assert Config.from_env({"TSWARM_TRUSTED_PROXIES": " 127.0.0.1 ,10.0.0.0/8,"}).trusted_proxies == (
        "127.0.0.1", "10.0.0.0/8",
    )
    with pytest.raises(ConfigError, match="TSWARM_TRUSTED_PROXIES: 'cloudflare' is not an IP address"):
        Config.from_env({"TSWARM_TRUSTED_PROXIES": "127.0.0.1,cloudflare"})


# -- HTTPS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGE_AND_STATIC)
async def test_force_https_redirects_the_page_over_plain_http(make_client, path):
    client = await make_client(force_https=True)
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 308
    host = f"{client.host}"
    assert resp.headers["Location"] == f"https://{host}{path}"


@pytest.mark.parametrize(
    "host, expected",
    [
        ("pi.lan:8080", "https://pi.lan/?refresh=5"),  # tswarm's own port has no TLS: the proxy's 443
        ("192.168.1.10:8080", "https://192.168.1.10/?refresh=5"),
        ("[fd00::2]:8080", "https://[fd00::2]/?refresh=5"),
        ("pi.lan", "https://pi.lan/?refresh=5"),
    ],
)
async def test_force_https_sends_a_direct_request_to_https_on_the_same_host(make_client, host, expected):
    client = await make_client(force_https=True, trusted_proxies=("10.0.0.0/8",))
    resp = await client.get("/?refresh=5", headers={"Host": host, "X-Forwarded-Host": "evil.example"},
                            allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (308, expected)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Host": "tswarm.example.org"}, "https://tswarm.example.org/?token=abc"),
        ({"Host": "tswarm.example.org:80"}, "https://tswarm.example.org/?token=abc"),  # plain HTTP's port
        ({"Host": "pi.lan:8443"}, "https://pi.lan:8443/?token=abc"),  # as the proxy says ($http_host)
        ({"Host": "127.0.0.1:8080", "X-Forwarded-Host": "tswarm.example.org"}, "https://tswarm.example.org/?token=abc"),
        ({"Host": "127.0.0.1:8080", "X-Forwarded-Host": "pi.lan:8443, other"}, "https://pi.lan:8443/?token=abc"),
    ],
)
async def test_force_https_through_a_trusted_proxy_goes_where_the_proxy_says(make_client, headers, expected):
    client = await make_client(force_https=True, trusted_proxies=("127.0.0.1",))
    resp = await client.get("/?token=abc", headers={**headers, "X-Forwarded-Proto": "http"}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (308, expected)


@pytest.mark.parametrize("host", ["evil.example/x", "a b", "user@evil.example"])
async def test_force_https_refuses_a_host_that_is_not_a_host_name(make_client, host):
    client = await make_client(force_https=True, trusted_proxies=("127.0.0.1",))
    resp = await client.get("/", headers={"X-Forwarded-Host": host}, allow_redirects=False)
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad_request"


def test_force_https_without_trusted_proxies_is_a_warning(caplog):
    from tswarm.proxy import middlewares

    with caplog.at_level("WARNING", logger="tswarm.proxy"):
        assert len(middlewares(Config(force_https=True))) == 1
    assert "TSWARM_FORCE_HTTPS=1 without TSWARM_TRUSTED_PROXIES" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tswarm.proxy"):
        middlewares(Config(force_https=True, trusted_proxies=("127.0.0.1",)))
    assert caplog.text == ""


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("path", ["/api/nodes/n1", "/api/nodes/n1/"])
async def test_force_https_never_redirects_a_node_over_plain_http(make_client, journal, node, method, path):
    client = await make_client(force_https=True)
    resp = await client.request(method, path, data=BODY, headers=node_headers(), allow_redirects=False)
    assert resp.status == 202
    assert "Strict-Transport-Security" not in resp.headers


@pytest.mark.parametrize("path", ["/healthz", "/api/nodes", "/metrics", "/api/nodes/n1"])
async def test_force_https_leaves_the_api_alone(make_client, path):
    client = await make_client(force_https=True)
    resp = await client.get(path, allow_redirects=False)
    assert resp.status not in (301, 302, 303, 307, 308), path


async def test_https_from_a_trusted_proxy_serves_the_page_with_hsts(make_client):
    client = await make_client(force_https=True, trusted_proxies=("127.0.0.1",))
    resp = await client.get("/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"})
    assert resp.status == 200
    assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(make_client):
    client = await make_client(force_https=True, trusted_proxies=("10.0.0.0/8",))
    resp = await client.get("/", headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert resp.status == 308
    assert "Strict-Transport-Security" not in resp.headers


async def test_without_force_https_nothing_is_redirected_nor_hsts_sent(make_client):
    client = await make_client(trusted_proxies=("127.0.0.1",))
    resp = await client.get("/", headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert resp.status == 200 and "Strict-Transport-Security" not in resp.headers


def test_force_https_comes_from_the_environment():
    assert Config.from_env({"TSWARM_FORCE_HTTPS": "1"}).force_https is True
    assert Config.from_env({}).force_https is False and Config.from_env({}).trusted_proxies == ()


def test_real_serve_behind_a_proxy_from_its_environment(tmp_path):
    """The real `tswarm serve`, configured only through TSWARM_* variables as docker-compose and Heroku do."""
    import http.client

    from tests.servers import ServiceProcess, add_node, request, tswarm_env

    data_dir = tmp_path / "data"
    env = tswarm_env(data_dir, TSWARM_TRUSTED_PROXIES="127.0.0.1", TSWARM_FORCE_HTTPS="1", TSWARM_AUTH_MAX_FAILURES="2")
    add_node(data_dir, "n1", PW, env=env)
    with ServiceProcess(data_dir, env=env) as service:
        def put(password, client, proto="http"):
            headers = node_headers(password, client=client, proto=proto)
            return request("POST", service.url + "/api/nodes/n1", BODY, headers)

        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        conn.request("GET", "/", headers={"Host": "tswarm.example.org"})
        page = conn.getresponse()
        conn.close()
        secure_page = request("GET", service.url + "/", headers={"X-Forwarded-Proto": "https"})
        failures = [put("wrong", "203.0.113.7")[0] for _ in range(3)]
        other = put("wrong", "203.0.113.8")[0]
        stored = put(PW, "203.0.113.8")
    assert (page.status, page.getheader("Location")) == (308, "https://tswarm.example.org/")
    assert secure_page[0] == 200 and secure_page[1]["Strict-Transport-Security"] == "max-age=31536000"
    assert failures == [401, 401, 429] and other == 401
    assert stored[0] == 202 and "Strict-Transport-Security" not in stored[1]


@pytest.mark.parametrize("example", ["deploy/tswarm.env.example", "deploy/env.example"])
def test_the_example_env_files_leave_https_to_a_proxy_that_is_there(example):
    """A Pi or docker-compose set up as the docs say has no TLS proxy until one is added: the examples
    must not redirect the page to a port where nothing listens."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / example).read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    config = Config.from_env({k: v for k, v in env.items() if k.startswith("TSWARM_") and "$" not in v})
    assert config.force_https is False
    assert "TSWARM_FORCE_HTTPS=1" in text or "FORCE_HTTPS" in text  # how to turn it on is explained
