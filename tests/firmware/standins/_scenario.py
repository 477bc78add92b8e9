"""Shared by the stand-in board modules: the scenario a test chose, and the record of what the
firmware did. Runs in the MicroPython Unix port (not CPython).

The env var FIRMWARE_SCENARIO names a JSON file:
    {"board": "esp8266"|"esp32", "ssids": ["reachable", ...], "sensor": "dht22",
     "sensor_failures": N, "temperature": 23.4, "humidity": 45.1, "record": "/path/events.jsonl"}
Each event the firmware causes is appended to "record" as one JSON line.
"""
import json
import os

_path = os.getenv("FIRMWARE_SCENARIO")
if not _path:
    raise ImportError("stand-in board modules need FIRMWARE_SCENARIO (see tests/firmware/standins/_scenario.py)")
with open(_path) as _f:
    scenario = json.load(_f)


def record(event, **fields):
    fields["event"] = event
    with open(scenario["record"], "a") as f:
        f.write(json.dumps(fields) + "\n")


def deep_sleep(ms, via):
    """A real board resets on wake; here the process ends, as if asleep for good."""
    import sys

    record("deepsleep", ms=ms, via=via)
    sys.exit(0)
