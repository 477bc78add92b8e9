"""The node's request body: ``{"name": "<login>", "data": "<temperature> <humidity>"}``, and the
optional fields newer firmware sends beside them (docs/protocol.md): telemetry (``vbat``, ``rssi``,
``awake_ms``, ``lost``), the ``age`` of a reading kept through an outage, and its exactly-once key
(``boot`` with ``seq``). Unknown keys are ignored, as always; a body without the new fields is the
reading it always was.

Pure functions, no aiohttp: the protocol handler calls :func:`parse_body`, which either
returns a :class:`Reading` or raises :class:`PayloadError` carrying the HTTP status
(400 malformed, 422 impossible values) and a short error code. An optional field of the wrong JSON
type (a boolean is never a number, ``null`` is not a value) is 400 ``bad_field``, one out of its
range 422 ``impossible_value``, each naming the key; ``boot`` and ``seq`` come together or not at all.
"""
from __future__ import annotations

import json
import math
import re
from typing import NamedTuple, Optional

from .storage.interface import NO_EXTRA, ReadingExtra

TEMPERATURE_RANGE = (-40.0, 80.0)  # DHT22's range; a DHT11 reports 0..50 inside it
HUMIDITY_RANGE = (0.0, 100.0)

# A decimal number in ASCII only: no hex, no comma, no full-width digits, no "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)


# The optional fields' ranges (docs/protocol.md).
VBAT_RANGE = (0.0, 20.0)  # volts, 0 excluded
RSSI_RANGE = (-127, 0)  # dBm
AWAKE_MS_RANGE = (0, 3_600_000)
AGE_RANGE = (0.0, 2_592_000.0)  # seconds: 30 days
SEQ_RANGE = (0, 2**31 - 1)
LOST_RANGE = (0, 1_000_000)
BOOT = re.compile(r"[0-9A-Za-z_-]{1,16}", re.ASCII)


class Reading(NamedTuple):  # a NamedTuple: made once a request, a third of a frozen dataclass's time
    temperature: float
    humidity: float
    extra: ReadingExtra = NO_EXTRA
    age_s: float = 0.0  # > 0: a reading kept on the node, taken that long ago
    key: Optional[tuple[str, int]] = None  # (boot, seq): stored once per node


class PayloadError(ValueError):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def _bad(detail: str, error: str = "bad_payload") -> PayloadError:
    return PayloadError(400, error, detail)


def _impossible(detail: str) -> PayloadError:
    return PayloadError(422, "impossible_value", detail)


def _shown(value: float) -> str:
    """A value as a 422 quotes it: every digit it has (``:g`` kept six, so 100.0001 read as "100",
    inside the range it was refused for), and no ``.0`` on a whole number."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def parse_number(token: str, what: str) -> float:
    if not _NUMBER.fullmatch(token):  # the two patterns never both match: a number is checked once
        if _NOT_FINITE.fullmatch(token):
            raise _impossible(f"{what} must be a finite number, not NaN or infinity")
        raise _bad(f"{what} is not a decimal number like 23 or -3.5", "bad_data")
    value = float(token)
    if not math.isfinite(value):
        raise _impossible(f"{what} is out of any range")
    return value + 0.0  # -0.0 is 0.0: SQLite cannot keep the sign of a zero, so no engine is given one


def parse_data(data: str) -> Reading:
    """Parse ``"<temperature> <humidity>"`` (DHT11 integers or DHT22 decimals)."""
    return Reading(*_in_range(*_numbers(data)))


def _numbers(data: str) -> tuple[float, float]:
    """The two numbers of ``data``, ``(temperature, humidity)``, or a 400: not two numbers."""
    tokens = data.split()
    if len(tokens) != 2:
        raise _bad(
            "data must be two numbers separated by a space: '<temperature> <humidity>', "
            f"got {len(tokens)} value(s)",
            "bad_data",
        )
    return parse_number(tokens[0], "temperature"), parse_number(tokens[1], "humidity")


def _in_range(temperature: float, humidity: float) -> tuple[float, float]:
    """The two values, or a 422: outside what the sensor can measure."""
    lo, hi = TEMPERATURE_RANGE
    if not lo <= temperature <= hi:
        raise _impossible(f"temperature {_shown(temperature)} °C is outside the sensor's range {lo:g}..{hi:g}")
    lo, hi = HUMIDITY_RANGE
    if not lo <= humidity <= hi:
        raise _impossible(f"humidity {_shown(humidity)} %RH is outside {lo:g}..{hi:g}")
    return temperature, humidity


def _bad_field(detail: str) -> PayloadError:
    return PayloadError(400, "bad_field", detail)


def _number(doc: dict, key: str, what: str) -> Optional[float]:
    """``doc[key]`` as a finite float (None: absent); 400 for anything but a JSON number."""
    if key not in doc:
        return None
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad_field(f"{key} must be a number ({what})")
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value):  # JSON cannot say NaN or inf, but 1e400 reads as inf
        raise _impossible(f"{key} is out of any range ({what})")
    return value + 0.0


def _integer(doc: dict, key: str, lo: int, hi: int, what: str) -> Optional[int]:
    """``doc[key]`` as an int in ``lo..hi`` (None: absent); 400 for anything but a JSON integer, 422 out of range."""
    if key not in doc:
        return None
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_field(f"{key} must be a whole number ({what})")
    if not lo <= value <= hi:
        raise _impossible(f"{key} {value} is outside {lo}..{hi} ({what})")
    return value


def parse_fields(doc: dict) -> tuple[ReadingExtra, float, Optional[tuple[str, int]]]:
    """The optional fields of a body: ``(extra, age_s, key)``, each validated (see the module)."""
    vbat = _number(doc, "vbat", "volts, above 0 and at most 20")
    if vbat is not None and not (VBAT_RANGE[0] < vbat <= VBAT_RANGE[1]):
        raise _impossible(f"vbat {_shown(vbat)} V is outside 0 < vbat <= 20")
    rssi = _integer(doc, "rssi", *RSSI_RANGE, "Wi-Fi RSSI in dBm")
    awake_ms = _integer(doc, "awake_ms", *AWAKE_MS_RANGE, "the previous wake's length in ms")
    age = _number(doc, "age", "seconds since the reading was taken, at most 30 days")
    if age is not None and not (AGE_RANGE[0] <= age <= AGE_RANGE[1]):
        raise _impossible(f"age {_shown(age)} s is outside 0..2592000 (30 days)")
    if "boot" in doc and not (isinstance(doc["boot"], str) and BOOT.fullmatch(doc["boot"])):
        raise _bad_field("boot must be a string of 1 to 16 of 0-9 A-Z a-z _ - (the board's boot identity)")
    seq = _integer(doc, "seq", *SEQ_RANGE, "the reading's sequence within boot")
    lost = _integer(doc, "lost", *LOST_RANGE, "kept readings the board dropped")
    if ("boot" in doc) != (seq is not None):
        raise _bad_field("boot and seq come together: send both (the reading's key) or neither")
    key = (doc["boot"], seq) if seq is not None else None
    return ReadingExtra(vbat, rssi, awake_ms, lost), age or 0.0, key


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# One decoder for every body: ``json.loads(text, parse_constant=...)`` would build a new one each call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_body(body: bytes, node: str) -> Reading:
    """Validate a whole request body for ``node``; raise :class:`PayloadError` when it is not a reading."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("body is not valid UTF-8 JSON", "bad_json") from None
    try:
        doc = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise _bad('body is not JSON; send {"name": "<login>", "data": "<temperature> <humidity>"}', "bad_json") from None
    if not isinstance(doc, dict):
        raise _bad('body must be a JSON object: {"name": ..., "data": ...}', "bad_json")
    missing = [key for key in ("name", "data") if key not in doc]
    if missing:
        raise _bad(f"missing field(s): {', '.join(missing)}", "missing_field")
    if not isinstance(doc["name"], str):
        raise _bad("name must be a string", "bad_name")
    if not isinstance(doc["data"], str):
        raise _bad('data must be a string like "23.4 45.1"', "bad_data")
    temperature, humidity = _numbers(doc["data"])  # the fields first (400), then the name (403), then the values (422)
    if doc["name"] != node:
        raise PayloadError(403, "name_mismatch", "the body's name differs from the node in the URL")
    _in_range(temperature, humidity)
    if len(doc) == 2:  # name and data alone (the seed's firmware): no optional field to read
        return Reading(temperature, humidity)
    extra, age_s, key = parse_fields(doc)
    return Reading(temperature, humidity, extra, age_s, key)

