"""The firmware's payload() against the service's parser: for every value a DHT11 or DHT22
can report, the service reads back the same reading, and the body is valid JSON.

Property-tested with hypothesis in CPython (node.py imports on the host), then the same
function run in the real MicroPython Unix port over a large sample.
"""
from __future__ import annotations

import importlib.util
import json
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tswarm.payload import Reading, parse_body
from tswarm.names import NODE_NAME

from .board import FIRMWARE, micropython_binary

spec = importlib.util.spec_from_file_location("firmware_node", FIRMWARE / "node.py")
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)

names = st.from_regex(NODE_NAME, fullmatch=True)


def dht22_value(tenths: int) -> float:
    """What micropython-lib's dht.DHT22 returns for a raw value of ``tenths``."""
    value = abs(tenths) * 0.1
    return -value if tenths < 0 else value


def float32(value: float) -> float:
    """The same number as a float32, as MicroPython stores floats on the ESP8266."""
    return struct.unpack("f", struct.pack("f", value))[0]


def check(name: str, temperature, humidity, expected: Reading) -> str:
    body = node.payload(name, temperature, humidity)
    assert json.loads(body) == {"name": name, "data": json.loads(body)["data"]}
    assert parse_body(body.encode(), name) == expected
    return body


@given(names, st.integers(0, 50), st.integers(20, 90))
@settings(deadline=None)  # time is not what is tested
def test_every_dht11_reading_reads_back_the_same(name, temperature, humidity):
    body = check(name, temperature, humidity, Reading(temperature, humidity))
    assert body == '{"name": "%s", "data": "%d %d"}' % (name, temperature, humidity)


@given(names, st.integers(-400, 800), st.integers(0, 1000))
@settings(deadline=None)  # time is not what is tested
def test_every_dht22_reading_reads_back_the_same(name, t_tenths, h_tenths):
    check(name, dht22_value(t_tenths), dht22_value(h_tenths), Reading(t_tenths / 10, h_tenths / 10))


@given(names, st.integers(-400, 800), st.integers(0, 1000))
@settings(deadline=None)  # time is not what is tested
def test_dht22_readings_as_esp8266_float32_read_back_the_same(name, t_tenths, h_tenths):
    t = float32(float32(abs(t_tenths)) * float32(0.1)) * (-1 if t_tenths < 0 else 1)
    h = float32(float32(h_tenths) * float32(0.1))
    check(name, t, h, Reading(t_tenths / 10, h_tenths / 10))


def test_payload_examples():
    assert node.payload("kitchen", 23, 45) == '{"name": "kitchen", "data": "23 45"}'
    assert node.payload("kitchen", 23.400000000000002, 45.1) == '{"name": "kitchen", "data": "23.4 45.1"}'
    assert node.payload("attic", -3.2, 80.0) == '{"name": "attic", "data": "-3.2 80.0"}'


MICROPYTHON_SCRIPT = """
import json, sys
sys.path.insert(0, %r)
import node
with open(%r) as f:
    cases = json.load(f)
for kind, t, h in cases:
    if kind == "dht22":  # as the real driver computes them
        t = -(abs(t) * 0.1) if t < 0 else t * 0.1
        h = h * 0.1
    print(node.payload("n-1", t, h))
"""


@pytest.mark.integration
def test_payload_in_micropython_reads_back_the_same(tmp_path):
    cases = [("dht11", t, h) for t in range(0, 51) for h in range(20, 91)]
    cases += [("dht22", t, (t * 7) % 1001) for t in range(-400, 801)]
    cases += [("dht22", (h * 13) % 1201 - 400, h) for h in range(0, 1001)]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = MICROPYTHON_SCRIPT % (str(FIRMWARE), str(tmp_path / "cases.json"))
    proc = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    bodies = proc.stdout.splitlines()
    assert len(bodies) == len(cases)
    for (kind, t, h), body in zip(cases, bodies):
        expected = Reading(t, h) if kind == "dht11" else Reading(t / 10, h / 10)
        assert parse_body(body.encode(), "n-1") == expected, body
        assert body == node.payload("n-1", expected.temperature if kind == "dht22" else t,
                                    expected.humidity if kind == "dht22" else h)
