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

NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
_HOUR_MINUTE = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]  # a minute of the day's "HH:MM:"
SECOND_TEXT = [f"{s:02d}." for s in range(60)]  # a second of the minute's "SS."


class MinuteText(dict):
    """``YYYY-MM-DDTHH:MM:`` of a minute (``ts_ns // NS_PER_MINUTE``, floor: before 1970 too),
    remembered: rows come in time order, so consecutive times share their minute, and a minute not
    seen yet costs a dict lookup of its day (``time.gmtime`` + ``time.strftime`` once per day, the
    proleptic Gregorian calendar in UTC). Bounded: at :data:`MAX_ENTRIES` minutes (or days) it starts
    again, so memory stays flat over any range."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        super().__init__()
        self.days: dict[int, str] = {}

    def __missing__(self, minute: int) -> str:
        day, of_day = divmod(minute, 1440)
        date = self.days.get(day)
        if date is None:
            if len(self.days) >= self.MAX_ENTRIES:
                self.days.clear()
            date = self.days[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        if len(self) >= self.MAX_ENTRIES:
            self.clear()
        text = self[minute] = date + _HOUR_MINUTE[of_day]
        return text


MINUTES = MinuteText()  # shared: what it holds depends only on the key (a race costs a recomputation)


def rfc3339(ts_ns: int) -> str:
    """``2026-11-25T11:04:19.123456789Z``: nanoseconds, so every stored timestamp reads back exact.

    The export writes many in a row with the same three pieces, inline (service/export.py): the
    minute's text (:data:`MINUTES`), the second's (:data:`SECOND_TEXT`) and the nine digits of the
    nanoseconds (``"%09d" % (ts % 10**9)``); floor division and modulo keep a time before
    1970 right (``-1`` is ``1969-12-31T23:59:59.999999999Z``)."""
    return f"{MINUTES[ts_ns // NS_PER_MINUTE]}{SECOND_TEXT[ts_ns % NS_PER_MINUTE // NS_PER_S]}{'%09d' % (ts_ns % NS_PER_S)}Z"


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
