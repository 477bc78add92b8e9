"""Times: nanoseconds since the epoch inside, RFC 3339 UTC outside."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)(?:\.(?P<frac>\d{1,9}))?(?P<tz>Z|z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_EPOCH = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)

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
    """RFC 3339 (``2026-11-25T11:04:19Z``, a date alone, or without zone: UTC) or epoch seconds -> ns."""
    text = text.strip()
    if _EPOCH.fullmatch(text):
        whole, _, frac = text.partition(".")
        sign = -1 if whole.startswith("-") else 1
        return int(whole) * 1_000_000_000 + sign * int((frac + "000000000")[:9])
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 time (2026-11-25T11:04:19Z) or epoch seconds")
    base = match["base"].replace(" ", "T")
    tz = match["tz"] or "+00:00"
    if tz in ("Z", "z"):
        tz = "+00:00"
    try:
        moment = datetime.fromisoformat(base + tz if "T" in base else base + "T00:00:00" + tz)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None
    frac = int(((match["frac"] or "") + "000000000")[:9])
    return int(moment.astimezone(timezone.utc).timestamp()) * 1_000_000_000 + frac
