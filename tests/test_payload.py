"""The payload parser: every value a DHT11/DHT22 can report reads back exactly; nothing else passes."""
import json
import math
import re

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


@pytest.mark.parametrize("data, detail", [
    ("23 100.0001", "humidity 100.0001 %RH is outside 0..100"),
    ("80.00001 45", "temperature 80.00001 °C is outside the sensor's range -40..80"),
    ("-40.000001 45", "temperature -40.000001 °C is outside the sensor's range -40..80"),
    ("23 -0.1", "humidity -0.1 %RH is outside 0..100"),
    ("81 45", "temperature 81 °C is outside the sensor's range -40..80"),
    ("1e300 45", "temperature 1e+300 °C is outside the sensor's range -40..80"),
])
def test_a_422_quotes_the_value_with_every_digit_it_has(data, detail):
    """Before, ``:g`` kept six digits: 100.0001 was refused as "humidity 100 %RH is outside 0..100"."""
    with pytest.raises(PayloadError) as err:
        parse_body(body(data), "n1")
    assert (err.value.status, err.value.detail) == (422, detail)


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not 0 <= v <= 100))
def test_the_humidity_a_422_quotes_reads_back_as_the_value_refused(humidity):
    with pytest.raises(PayloadError) as err:
        parse_body(body(f"23 {humidity!r}"), "n1")
    shown = re.fullmatch(r"humidity (\S+) %RH is outside 0\.\.100", err.value.detail).group(1)
    assert float(shown) == humidity + 0.0


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


# -- the optional fields of newer firmware: telemetry, age, the key -------------------------------------

from tswarm.storage import NO_EXTRA, ReadingExtra  # noqa: E402

# key -> (values in range, values of the right JSON type out of range)
INTEGERS = {
    "rssi": (-127, 0), "awake_ms": (0, 3_600_000), "seq": (0, 2**31 - 1), "lost": (0, 1_000_000),
}
NUMBERS = {"vbat": (0.0, 20.0), "age": (0.0, 2_592_000.0)}  # vbat excludes 0
FINITE = st.floats(allow_nan=False, allow_infinity=False)


def fields(**extra) -> bytes:
    return json.dumps({"name": "n1", "data": "23.4 45.1", **extra}).encode()


def refused(raw: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as err:
        parse_body(raw, "n1")
    return err.value


def with_key(key, value) -> dict:
    """``{key: value}``, with the other half of the reading's key when ``key`` is one half."""
    return {key: value, **({"boot": "b"} if key == "seq" else {"seq": 0} if key == "boot" else {})}


def test_a_body_without_the_new_fields_is_todays_reading_exactly():
    reading = parse_body(fields(), "n1")
    assert reading == Reading(23.4, 45.1) and reading.extra is NO_EXTRA and reading.age_s == 0.0 and reading.key is None


@given(
    vbat=st.floats(0.0, 20.0, exclude_min=True), rssi=st.integers(-127, 0), awake_ms=st.integers(0, 3_600_000),
    lost=st.integers(0, 1_000_000), age=st.floats(0.0, 2_592_000.0), seq=st.integers(0, 2**31 - 1),
    boot=st.from_regex(r"[0-9A-Za-z_-]{1,16}", fullmatch=True),
)
def test_every_field_in_range_reads_back_exactly(vbat, rssi, awake_ms, lost, age, seq, boot):
    reading = parse_body(fields(vbat=vbat, rssi=rssi, awake_ms=awake_ms, lost=lost, age=age, seq=seq, boot=boot), "n1")
    assert reading == Reading(23.4, 45.1, ReadingExtra(vbat, rssi, awake_ms, lost), age, (boot, seq))


@given(st.sampled_from(sorted(NUMBERS)), st.integers(1, 20))
def test_numbers_may_be_sent_as_integers(key, value):
    reading = parse_body(fields(**{key: value}), "n1")
    assert (reading.extra.vbat if key == "vbat" else reading.age_s) == float(value)


@given(st.sampled_from(sorted(INTEGERS)), st.data())
def test_an_integer_field_out_of_its_range_is_422_naming_it(key, data):
    lo, hi = INTEGERS[key]
    value = data.draw(st.integers(max_value=lo - 1) | st.integers(min_value=hi + 1))
    err = refused(fields(**with_key(key, value)))
    assert (err.status, err.error) == (422, "impossible_value") and err.detail.startswith(f"{key} ")


@given(st.sampled_from(sorted(NUMBERS)), st.data())
def test_a_number_field_out_of_its_range_is_422_naming_it(key, data):
    lo, hi = NUMBERS[key]
    below = st.floats(max_value=lo, exclude_max=key == "age", allow_nan=False, allow_infinity=False)
    value = data.draw(below | st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False))
    err = refused(fields(**{key: value}))
    assert (err.status, err.error) == (422, "impossible_value") and err.detail.startswith(f"{key} ")


@pytest.mark.parametrize("key", sorted(NUMBERS))
@pytest.mark.parametrize("raw", ["1e400", "-1e400", "1" + "0" * 400])
def test_a_number_beyond_any_float_is_422(key, raw):
    err = refused(b'{"name": "n1", "data": "23 45", "%s": %s}' % (key.encode(), raw.encode()))
    assert (err.status, err.error) == (422, "impossible_value") and key in err.detail


NOT_A_NUMBER = st.booleans() | st.none() | st.text() | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(), st.integers(), max_size=1)


@given(st.sampled_from(sorted(NUMBERS) + sorted(INTEGERS)), NOT_A_NUMBER)
def test_a_field_of_the_wrong_json_type_is_400_naming_it(key, value):
    err = refused(fields(**with_key(key, value)))
    assert (err.status, err.error) == (400, "bad_field") and err.detail.startswith(f"{key} must be")


@given(st.sampled_from(sorted(INTEGERS)), FINITE)
def test_an_integer_field_sent_as_a_decimal_is_400(key, value):
    err = refused(fields(**with_key(key, value)))
    assert (err.status, err.error) == (400, "bad_field") and err.detail.startswith(f"{key} must be a whole number")


def test_booleans_are_never_numbers():
    for key in ("vbat", "age", "rssi", "awake_ms", "lost"):
        err = refused(fields(**{key: True}))
        assert (err.status, err.error) == (400, "bad_field"), key
    assert refused(fields(seq=True, boot="b")).error == "bad_field"
    assert refused(fields(rssi=False)).error == "bad_field"


NOT_TEXT = st.booleans() | st.none() | st.lists(st.integers(), max_size=2) | st.integers() | FINITE


@given(st.text().filter(lambda t: not re.fullmatch(r"[0-9A-Za-z_-]{1,16}", t, re.ASCII)) | NOT_TEXT)
def test_a_boot_that_is_not_1_to_16_safe_characters_is_400(boot):
    err = refused(fields(boot=boot, seq=1))
    assert (err.status, err.error) == (400, "bad_field") and err.detail.startswith("boot must be")


@pytest.mark.parametrize("half", [{"seq": 1}, {"boot": "b"}])
def test_seq_and_boot_come_together(half):
    err = refused(fields(**half))
    assert (err.status, err.error) == (400, "bad_field") and "boot and seq" in err.detail


def test_unknown_keys_stay_ignored_beside_the_new_fields():
    assert parse_body(fields(vbat=3.3, firmware="x", extra={"a": 1}), "n1") == Reading(23.4, 45.1, ReadingExtra(vbat=3.3))


def test_age_zero_is_now_and_the_data_is_checked_first():
    assert parse_body(fields(age=0), "n1") == Reading(23.4, 45.1)
    err = refused(json.dumps({"name": "n1", "data": "99 45", "vbat": True}).encode())
    assert err.status == 422 and err.error == "impossible_value"  # the reading's own error, as today
