"""The node's request body: ``{"name": "<login>", "data": "<temperature> <humidity>"}``.

Pure functions, no aiohttp: the protocol handler calls :func:`parse_body`, which either
returns a :class:`Reading` or raises :class:`PayloadError` carrying the HTTP status
(400 malformed, 422 impossible values) and a short error code.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

TEMPERATURE_RANGE = (-40.0, 80.0)  # DHT22's range; a DHT11 reports 0..50 inside it
HUMIDITY_RANGE = (0.0, 100.0)

# A decimal number in ASCII only: no hex, no comma, no full-width digits, no "1_000".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    temperature: float
    humidity: float


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


def parse_number(token: str, what: str) -> float:
    if _NOT_FINITE.fullmatch(token):
        raise _impossible(f"{what} must be a finite number, not NaN or infinity")
    if not _NUMBER.fullmatch(token):
        raise _bad(f"{what} is not a decimal number like 23 or -3.5", "bad_data")
    value = float(token)
    if not math.isfinite(value):
        raise _impossible(f"{what} is out of any range")
    return value + 0.0  # -0.0 is 0.0: SQLite cannot keep the sign of a zero, so no engine is given one


def parse_data(data: str) -> Reading:
    """Parse ``"<temperature> <humidity>"`` (DHT11 integers or DHT22 decimals)."""
    tokens = data.split()
    if len(tokens) != 2:
        raise _bad(
            "data must be two numbers separated by a space: '<temperature> <humidity>', "
            f"got {len(tokens)} value(s)",
            "bad_data",
        )
    temperature = parse_number(tokens[0], "temperature")
    humidity = parse_number(tokens[1], "humidity")
    lo, hi = TEMPERATURE_RANGE
    if not lo <= temperature <= hi:
        raise _impossible(f"temperature {temperature:g} °C is outside the sensor's range {lo:g}..{hi:g}")
    lo, hi = HUMIDITY_RANGE
    if not lo <= humidity <= hi:
        raise _impossible(f"humidity {humidity:g} %RH is outside {lo:g}..{hi:g}")
    return Reading(temperature, humidity)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes, node: str) -> Reading:
    """Validate a whole request body for ``node``; raise :class:`PayloadError` when it is not a reading."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("body is not valid UTF-8 JSON", "bad_json") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _bad('body is not JSON; send {"name": "<login>", "data": "<temperature> <humidity>"}', "bad_json") from None
    if not isinstance(doc, dict):
        raise _bad('body must be a JSON object: {"name": ..., "data": ...}', "bad_json")
    missing = [key for key in ("name", "data") if key not in doc]
    if missing:
        raise _bad(f"missing field(s): {', '.join(missing)}", "missing_field")
    if not isinstance(doc["name"], str):
        raise _bad("name must be a string", "bad_name")
    if doc["name"] != node:
        raise PayloadError(403, "name_mismatch", "the body's name differs from the node in the URL")
    if not isinstance(doc["data"], str):
        raise _bad('data must be a string like "23.4 45.1"', "bad_data")
    return parse_data(doc["data"])

