"""tswarm.influx: the one v1/v2 switch, the one description of the target, the one error-text extractor."""
import pytest

from tswarm.influx import MAX_ERROR_CHARS, V1Endpoint, V2Endpoint, endpoint, error_text
from tswarm.influx.lines import line_protocol
from tswarm.influx.query import V1History, V2History
from tswarm.influx.write import WriteError
from tswarm.settings import Config
from tswarm.storage import OutboxReading
from tests.servers import InfluxDB1

READINGS = [OutboxReading(1, "kitchen", 1_795_000_000_000_000_000, 20.5, 40.0)]


def influx_config(**changes) -> Config:
    return Config(store="influxdb", influx_org="home").with_(**changes)


def test_api_1_is_the_v1_endpoint_with_database_user_and_password():
    config = influx_config(influx_api="1", influx_url="http://pi:8086/", influx_db="climate",
                           influx_user="tswarm", influx_password="pw")
    assert endpoint(config) == V1Endpoint("http://pi:8086", "climate", "tswarm", "pw")


def test_api_2_is_the_v2_endpoint_with_token_org_and_bucket():
    config = influx_config(influx_api="2", influx_url="http://box:8086", influx_token="t0k", influx_bucket="b")
    assert endpoint(config) == V2Endpoint("http://box:8086", "t0k", "home", "b")


def test_description_of_each_api_names_where_it_writes():
    v1 = endpoint(influx_config(influx_api="1", influx_url="http://127.0.0.1:8086/"))
    v2 = endpoint(influx_config(influx_api="2", influx_url="http://127.0.0.1:8086"))
    assert v1.where == "v1 API at http://127.0.0.1:8086, database 'tswarm'"
    assert v1.description == "InfluxDB v1 API at http://127.0.0.1:8086, database 'tswarm'"
    assert v2.where == "v2 API at http://127.0.0.1:8086, bucket 'tswarm'"
    assert v2.description == "InfluxDB v2 API at http://127.0.0.1:8086, bucket 'tswarm'"


def test_the_history_readers_describe_themselves_as_their_endpoint_does():
    for api in ("1", "2"):
        target = endpoint(influx_config(influx_api=api))
        with target.open_history() as history:
            assert isinstance(history, V1History if api == "1" else V2History)
            assert history.description == target.description


async def test_the_write_targets_describe_themselves_as_their_endpoint_does():
    for api in ("1", "2"):
        target = endpoint(influx_config(influx_api=api))
        writer = target.open_target()
        try:
            assert writer.description == target.description
        finally:
            await writer.close()


def test_secrets_stay_out_of_an_endpoints_repr():
    assert "pw" not in repr(V1Endpoint("http://pi:8086", "db", "u", "pw"))
    assert "t0k" not in repr(V2Endpoint("http://pi:8086", "t0k", "o", "b"))


def test_error_text_is_the_error_of_influxdb_1_or_the_message_of_influxdb_2():
    assert error_text(b'{"error":"database not found: \\"tswarm\\""}\n') == 'database not found: "tswarm"'
    assert error_text('{"code":"unauthorized","message":"unauthorized access"}') == "unauthorized access"


def test_error_text_of_anything_else_is_the_body_stripped_and_cut():
    assert error_text("  502 Bad Gateway\n") == "502 Bad Gateway"
    assert error_text(b'["not", "an object"]') == '["not", "an object"]'
    assert error_text('{"code": "internal error"}') == '{"code": "internal error"}'
    assert error_text(b"\xff oops") == "\ufffd oops"
    assert error_text("x" * 2000) == "x" * MAX_ERROR_CHARS


def test_error_text_is_one_line_and_an_html_page_is_its_title():
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"
    assert error_text(page) == "an HTML page (502 Bad Gateway)"
    assert error_text(b"<!doctype html><body>Sign in</body>") == "an HTML page"
    assert error_text("upstream connect error\n  or disconnect/reset\tbefore headers\n") == (
        "upstream connect error or disconnect/reset before headers"
    )
    assert error_text('{"error":"partial write:\\nfield type conflict"}') == "partial write: field type conflict"


def test_credentials_in_the_url_are_the_v1_user_and_password_and_never_shown():
    config = influx_config(influx_api="1", influx_url="http://tswarm:p%40ss@pi:8086/")
    v1 = endpoint(config)
    assert (v1.url, v1.user, v1.password) == ("http://pi:8086", "tswarm", "p@ss")
    assert "p@ss" not in v1.description + v1.where + repr(v1) and "p%40ss" not in v1.description
    # TSWARM_INFLUX_USER and _PASSWORD, when set, win over the URL's.
    given = endpoint(config.with_(influx_user="writer", influx_password="pw"))
    assert (given.url, given.user, given.password) == ("http://pi:8086", "writer", "pw")
    # The v2 API authenticates with the token: the URL's credentials are dropped.
    v2 = endpoint(influx_config(influx_api="2", influx_url="http://u:secret@box:8086", influx_token="t0k"))
    assert v2 == V2Endpoint("http://box:8086", "t0k", "home", "tswarm") and "secret" not in v2.description


@pytest.fixture
def influxdb1_with_auth(tmp_path):
    """A private ``influxd`` with ``auth-enabled = true`` and one admin, ``admin`` / ``p@ss``."""
    server = InfluxDB1(tmp_path / "influxdb1-auth")
    server.config_path.write_text(server.config_path.read_text().replace("[http]\n", "[http]\n  auth-enabled = true\n"))
    server.start()
    try:
        server.query("CREATE USER admin WITH PASSWORD 'p@ss' WITH ALL PRIVILEGES")  # the first user needs no auth
        yield server
    finally:
        server.stop()


@pytest.mark.integration
async def test_influxdb1_with_auth_takes_the_urls_credentials_and_a_refusal_names_the_settings(influxdb1_with_auth):
    url = influxdb1_with_auth.url.replace("http://", "http://admin:p%40ss@")
    v1 = endpoint(influx_config(influx_api="1", influx_url=url, influx_db="climate"))
    assert v1.url == influxdb1_with_auth.url
    target = v1.open_target()
    try:
        await target.write(target.prepare(line_protocol(READINGS)), 1)  # creates the database, as the admin
    finally:
        await target.close()
    with v1.open_history() as history:  # the same credentials read it back
        assert list(history.readings(None, 2**62)) == [(r.ts, r.node, r.temperature, r.humidity) for r in READINGS]
    wrong = endpoint(influx_config(influx_api="1", influx_url=url, influx_db="climate",
                                   influx_user="admin", influx_password="wrong"))
    target = wrong.open_target()
    try:
        with pytest.raises(WriteError) as raised:
            await target.write(target.prepare(line_protocol(READINGS)), 1)
    finally:
        await target.close()
    assert str(raised.value) == "HTTP 401: authorization failed (check TSWARM_INFLUX_USER and TSWARM_INFLUX_PASSWORD)"
