"""Times: nanoseconds since the epoch inside, RFC 3339 UTC outside.

Inside, a time is a signed 64-bit integer of nanoseconds (SQLite's INTEGER, InfluxDB's timestamps):
:data:`MIN_NS` to :data:`MAX_NS`, 1677-09-21 to 2262-04-11. :func:`parse_time` refuses anything
outside, so no reader ever hands the journal or InfluxDB a time they cannot hold.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)(?:\.(?P<frac>\d{1,9}))?(?P<tz>Z|z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_EPOCH = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)
_EPOCH_DIGITS = 12  # epoch seconds with more digits are far outside MIN_NS..MAX_NS (and int() is not asked)

MIN_NS = -(2**63)
MAX_NS = 2**63 - 1

_second_cache: tuple[int, str] = (-1, "")


def rfc3339(ts_ns: int) -> str:
    """``2026-11-25T11:04:19.123456789Z``: nanoseconds, so every stored timestamp reads back exact."""
    global _second_cache
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    cached_second, prefix = _second_cache
    if cached_second != seconds:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, prefix)
    return f"{prefix}.{frac:09d}Z"


def parse_time(text: str) -> int:
    """RFC 3339 (``2026-11-25T11:04:19Z``, a date alone, or without zone: UTC) or epoch seconds -> ns.

    ValueError (its message says what to fix) for anything else, and for times outside
    :data:`MIN_NS`..:data:`MAX_NS`. Digits are ASCII only: ``int()`` would read Arabic-Indic or
    fullwidth digits too, but no RFC 3339 time is written with them."""
    text = text.strip()
    if _EPOCH.fullmatch(text):
        whole, _, frac = text.partition(".")
        if len(whole.lstrip("+-")) > _EPOCH_DIGITS:
            raise _out_of_range(text)
        sign = -1 if whole.startswith("-") else 1
        return _in_range(int(whole) * 1_000_000_000 + sign * int((frac + "000000000")[:9]), text)
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(f"{shown(text)} is not an RFC 3339 time (2026-11-25T11:04:19Z) or epoch seconds")
    base = match["base"].replace(" ", "T")
    tz = match["tz"] or "+00:00"
    if tz in ("Z", "z"):
        tz = "+00:00"
    try:
        moment = datetime.fromisoformat(base + tz if "T" in base else base + "T00:00:00" + tz)
    except ValueError as exc:
        raise ValueError(f"{shown(text)} is not a valid time: {exc}") from None
    try:
        seconds = int(moment.astimezone(timezone.utc).timestamp())
    except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise _out_of_range(text) from None
    frac = int(((match["frac"] or "") + "000000000")[:9])
    return _in_range(seconds * 1_000_000_000 + frac, text)


def _in_range(ts_ns: int, text: str) -> int:
    if not MIN_NS <= ts_ns <= MAX_NS:
        raise _out_of_range(text)
    return ts_ns


def _out_of_range(text: str) -> ValueError:
    return ValueError(f"{shown(text)} is outside the times tswarm can hold ({rfc3339(MIN_NS)} to {rfc3339(MAX_NS)})")


def shown(text: str, width: int = 40) -> str:
    """``text`` quoted for an error message, cut to ``width`` characters: a client can send a lot."""
    return repr(text) if len(text) <= width else repr(text[:width]) + "..."
