"""tswarm.influx: the one v1/v2 switch, the one description of the target, the one error-text extractor."""
from tswarm.influx import MAX_ERROR_CHARS, V1Endpoint, V2Endpoint, endpoint, error_text
from tswarm.influx.query import V1History, V2History
from tswarm.settings import Config


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
