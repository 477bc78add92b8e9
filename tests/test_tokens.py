"""The read token a first `serve` makes when TSWARM_READ_TOKEN is empty (service/tokens.py)."""
from __future__ import annotations

import multiprocessing
import stat

import pytest

from tswarm.settings import Config
from tswarm.tokens import TokenFileError, announce, ensure_read_token, load_read_token, page_base_url, token_path
from tests.conftest import test_config


def test_the_first_call_makes_a_private_token_and_later_calls_reuse_it(tmp_path):
    data_dir = tmp_path / "data"
    token, created = ensure_read_token(data_dir)
    assert created and len(token) >= 40
    assert stat.S_IMODE(token_path(data_dir).stat().st_mode) == 0o600
    assert token_path(data_dir).read_text() == token + "\n"
    assert ensure_read_token(data_dir) == (token, False)
    assert load_read_token(data_dir) == token
    assert sorted(p.name for p in data_dir.iterdir()) == ["read-token"]  # no temporary file left


def _make(data_dir, queue):
    queue.put(ensure_read_token(data_dir))


def test_processes_starting_together_end_with_one_token(tmp_path):
    data_dir = tmp_path / "data"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make, args=(data_dir, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert len({token for token, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert load_read_token(data_dir) == results[0][0]


def test_an_empty_token_file_is_an_error_that_says_what_to_do(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    token_path(data_dir).write_text("\n")
    with pytest.raises(TokenFileError, match="is empty; delete it"):
        ensure_read_token(data_dir)


def test_a_data_dir_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(TokenFileError, match="cannot"):
        ensure_read_token(tmp_path / "data")


@pytest.mark.parametrize(
    "host, public_url, expected",
    [
        ("0.0.0.0", "", "http://192.168.1.20:8080"),
        ("::", "", "http://192.168.1.20:8080"),
        ("192.168.1.5", "", "http://192.168.1.5:8080"),
        ("fd00::2", "", "http://[fd00::2]:8080"),
        ("0.0.0.0", "http://pi.lan:8080", "http://pi.lan:8080"),
    ],
)
def test_the_page_url_is_what_another_device_can_open(host, public_url, expected):
    assert page_base_url(Config(host=host, public_url=public_url), "192.168.1.20") == expected


def test_without_a_lan_address_the_page_url_says_so():
    assert page_base_url(Config(), None) == "http://<this machine's address>:8080"


def test_the_url_with_the_token_is_announced_once(tmp_path):
    config = Config(data_dir=tmp_path / "data")
    first = announce(config, "192.168.1.20")
    token = load_read_token(config.data_dir)
    assert f"http://192.168.1.20:8080/?token={token}\n" in first
    assert str(token_path(config.data_dir)) in first
    later = announce(config, "192.168.1.20")
    assert token not in later
    assert later == (
        f"status page: http://192.168.1.20:8080/ (other devices: add ?token= with the read token kept in"
        f" {token_path(config.data_dir)})"
    )


def test_a_configured_read_token_makes_no_file_and_says_nothing(tmp_path):
    config = Config(data_dir=tmp_path / "data", read_token="set-by-hand")
    assert announce(config, "192.168.1.20") is None
    assert not token_path(config.data_dir).exists()


def test_real_serve_with_workers_makes_one_token_prints_it_once_and_every_worker_takes_it(tmp_path):
    """The real `tswarm serve --workers 2`. A client on the LAN is a request through a trusted proxy
    (X-Forwarded-For): the test may only serve on loopback."""
    import re
    import time

    from tests.servers import ServiceProcess, request, tswarm_env

    data_dir = tmp_path / "data"
    # the access log on: which worker answered is read from its lines
    env = tswarm_env(data_dir, TSWARM_TRUSTED_PROXIES="127.0.0.1", TSWARM_ACCESS_LOG="1")
    lan = {"X-Forwarded-For": "192.168.1.77"}
    with ServiceProcess(data_dir, env=env, args=("--workers", "2")) as service:
        token = load_read_token(data_dir)
        assert stat.S_IMODE(token_path(data_dir).stat().st_mode) == 0o600
        assert request("GET", service.url + "/api/nodes", headers=lan)[0] == 401
        assert request("GET", service.url + "/api/nodes")[0] == 200  # loopback: the README's curl tour
        deadline = time.monotonic() + 30
        while set(re.findall(r"\[worker (\d)\] aiohttp\.access: .*\"GET /api/nodes HTTP/1.1\" 200", service.log())) != {"0", "1"}:
            assert time.monotonic() < deadline, "both workers should have answered the token"
            assert request("GET", service.url + "/api/nodes", headers={**lan, "Authorization": f"Bearer {token}"})[0] == 200
        status, headers, _ = request("GET", f"{service.url}/?token={token}", headers=lan)  # urllib follows the 303
        assert status == 200
    first = service.log()
    assert f":{service.port}/?token={token}\n" in first  # --host 127.0.0.1: the URL of that host
    assert first.count(token) == 1  # printed once; the access log line of /?token= is redacted
    assert "GET /?token=*** HTTP/1.1\" 303" in first

    with ServiceProcess(data_dir, env=env, port=service.port, log_path=tmp_path / "second.log") as again:
        assert load_read_token(data_dir) == token
        assert request("GET", again.url + "/api/nodes", headers={**lan, "Authorization": f"Bearer {token}"})[0] == 200
    second = again.log()
    assert token not in second
    assert f"the read token kept in {token_path(data_dir)}" in second


def test_on_postgresql_every_instance_shares_the_one_token_kept_in_the_database(tmp_path, postgres_url):
    from tswarm.storage import READ_TOKEN, open_storage
    from tswarm.tokens import kept_read_token

    a, b = (test_config(tmp_path / name, database_url=postgres_url) for name in ("a", "b"))  # two instances
    first = announce(a, "192.168.1.20")
    token, created = kept_read_token(b)
    assert not created and f"http://192.168.1.20:8080/?token={token}\n" in first
    assert "kept in the database (table meta, key 'read_token'; every instance uses it); delete that row" in first
    assert kept_read_token(a) == (token, False)
    assert not token_path(a.data_dir).exists() and not token_path(b.data_dir).exists()
    with open_storage("", postgres_url) as journal:
        assert journal.meta(READ_TOKEN) == token
    assert token not in announce(b, "192.168.1.21")  # printed once, by the instance that made it
