"""The payload parser: every value a DHT11/DHT22 can report reads back exactly; nothing else passes."""
import json
import math

import pytest
from hypothesis import given, strategies as st

from tswarm.payload import PayloadError, Reading, parse_body, parse_data


def body(data, name="n1") -> bytes:
    return json.dumps({"name": name, "data": data}).encode()


# DHT11: whole degrees 0..50 °C, 20..90 %RH (the driver reports ints; we accept its whole range 0..100).
dht11 = st.tuples(st.integers(0, 50), st.integers(0, 100))
# DHT22: tenths, -40.0..80.0 °C, 0.0..100.0 %RH.
dht22 = st.tuples(st.integers(-400, 800).map(lambda t: t / 10), st.integers(0, 1000).map(lambda h: h / 10))


@given(dht11)
def test_every_dht11_reading_round_trips(values):
    t, h = values
    assert parse_body(body(f"{t} {h}"), "n1") == Reading(float(t), float(h))


@given(dht22)
def test_every_dht22_reading_round_trips(values):
    t, h = values
    assert parse_body(body(f"{t} {h}"), "n1") == Reading(t, h)
    assert parse_body(body("%.1f %.1f" % (t, h)), "n1") == Reading(t, h)


@given(dht22, st.sampled_from([" ", "  ", "\t", " \t "]))
def test_any_white_space_separates_the_values(values, sep):
    t, h = values
    assert parse_data(f" {t}{sep}{h} ") == Reading(t, h)


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda t: not -40 <= t <= 80), st.integers(0, 100))
def test_temperature_outside_the_sensor_range_is_422(t, h):
    with pytest.raises(PayloadError) as err:
        parse_data(f"{t!r} {h}")
    assert err.value.status == 422


@given(st.integers(-40, 80), st.floats(allow_nan=False, allow_infinity=False).filter(lambda h: not 0 <= h <= 100))
def test_humidity_outside_0_to_100_is_422(t, h):
    with pytest.raises(PayloadError) as err:
        parse_data(f"{t} {h!r}")
    assert err.value.status == 422


@given(st.text())
def test_arbitrary_text_never_crashes_and_valid_results_are_in_range(text):
    try:
        reading = parse_data(text)
    except PayloadError as exc:
        assert exc.status in (400, 422)
    else:
        assert -40 <= reading.temperature <= 80 and 0 <= reading.humidity <= 100
        assert math.isfinite(reading.temperature) and math.isfinite(reading.humidity)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(raw):
    try:
        parse_body(raw, "n1")
    except PayloadError as exc:
        assert exc.status in (400, 403, 422)


@pytest.mark.parametrize(
    "data",
    ["23,4 45,1", "0x17 45", "２３ ４５", "23", "", "   ", "23 45 67", "23 45\nclimate,node=x temperature=1",
     "1_000 45", "23. 45 x", "abc def", "23 -", "+ 45", "23;45"],
)
def test_malformed_data_is_400(data):
    with pytest.raises(PayloadError) as err:
        parse_body(body(data), "n1")
    assert err.value.status == 400


@pytest.mark.parametrize("data", ["nan 45", "23 NaN", "inf 45", "23 -Infinity", "1e309 45", "23 1e309", "81 45", "-40.1 45", "23 100.1", "23 -0.1"])
def test_impossible_values_are_422(data):
    with pytest.raises(PayloadError) as err:
        parse_body(body(data), "n1")
    assert err.value.status == 422


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1, 2]", b'"23 45"', b"null", b'{"name": "n1"}', b'{"data": "23 45"}',
     b'{"name": "n1", "data": 23}', b'{"name": "n1", "data": ["23", "45"]}', b'{"name": 1, "data": "23 45"}',
     b'{"name": "n1", "data": "23 45"', b"\xff\xfe{}", b'{"name": "n1", "data": NaN}', b"[" * 3000 + b"]" * 3000],
)
def test_bodies_that_are_not_a_reading_are_400(raw):
    with pytest.raises(PayloadError) as err:
        parse_body(raw, "n1")
    assert err.value.status == 400


def test_body_name_that_differs_from_the_url_is_403():
    with pytest.raises(PayloadError) as err:
        parse_body(body("23 45", name="other"), "n1")
    assert err.value.status == 403


def test_negative_and_decimal_values_are_exact():
    assert parse_data("-3.2 80.0") == Reading(-3.2, 80.0)
    assert parse_data("23 45") == Reading(23.0, 45.0)
    assert parse_data("-40 0") == Reading(-40.0, 0.0)
    assert parse_data("80 100") == Reading(80.0, 100.0)
