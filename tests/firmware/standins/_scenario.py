"""Shared by the stand-in board modules: the scenario a test chose, and the record of what the
firmware did. Runs in the MicroPython Unix port (not CPython).

The env var FIRMWARE_SCENARIO names a JSON file:
    {"board": "esp8266"|"esp32", "ssids": ["reachable", ...], "saved": "ssid", "sensor_failures": N,
     "temperature": 23.4, "humidity": 45.1, "deepsleep_fails": false, "record": "/path/events.jsonl"}
Each event the firmware causes is appended to "record" as one JSON line.

Each stand-in behaves like the real module of the scenario's board, down to what it lacks and
what it refuses (see esp.py and machine.py). One thing no module here can fake: the Unix port's
``sys.platform`` is 'linux' and read-only. The firmware asks for the port through one function,
``node.port()`` (it returns ``sys.platform``), and tests/firmware/board.py's ``boot()`` points that
function at the scenario's board before it runs main.py; nothing else of the firmware is touched.
"""
import _thread
import json
import os

_path = os.getenv("FIRMWARE_SCENARIO")
if not _path:
    raise ImportError("stand-in board modules need FIRMWARE_SCENARIO (see tests/firmware/standins/_scenario.py)")
with open(_path) as _f:
    scenario = json.load(_f)

ESP32 = scenario.get("board") == "esp32"
_MAIN = _thread.get_ident()  # the main task: the one that runs main.py


def record(event, **fields):
    fields["event"] = event
    with open(scenario["record"], "a") as f:
        f.write(json.dumps(fields) + "\n")


def check_int(value):
    """What the ports' C functions do with an argument that must be an int (mp_obj_get_int)."""
    if isinstance(value, float):
        raise TypeError("can't convert float to int")
    if not isinstance(value, int):
        raise TypeError("can't convert %s to int" % type(value).__name__)


def deep_sleep(ms, via):
    """A real board resets on wake; here the process ends, as if asleep for good."""
    import sys

    if scenario.get("deepsleep_fails"):
        record("deepsleep_failed", via=via)
        raise OSError(5)  # EIO: whatever a broken board or port would raise
    record("deepsleep", ms=ms, via=via)
    if _thread.get_ident() != _MAIN:  # a Timer's callback (machine.py): sys.exit would end that thread only
        os.system("kill -9 $PPID")  # the shell's parent: this MicroPython process, asleep for good
    sys.exit(0)
