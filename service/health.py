"""A node's health, judged from its readings alone.

A node wakes every ``interval_s`` seconds (300 unless set with ``tswarm node interval``) and
sends one reading. Judged at ``now``:

- ``halted``: the node (or every node) is halted; it stays awake for reflashing.
- ``never``: registered, but no reading yet.
- ``ok``: the last reading is at most 1.5 intervals old (half an interval of grace for Wi-Fi
  and clock drift).
- ``late``: older than that, so it missed one or more expected wakes, but less than an hour.
- ``silent``: late, and nothing for an hour or more.
"""
from __future__ import annotations

from typing import Optional

HEALTH_STATES = ("ok", "late", "silent", "halted", "never")
SILENT_AFTER_S = 3600
GRACE = 1.5  # a wake is missed once the last reading is older than GRACE intervals


def health(now_ns: int, last_ts: Optional[int], interval_s: int, halted: bool) -> str:
    if halted:
        return "halted"
    if last_ts is None:
        return "never"
    age_s = (now_ns - last_ts) / 1e9
    if age_s <= GRACE * interval_s:
        return "ok"
    return "silent" if age_s >= SILENT_AFTER_S else "late"


MIN_INTERVAL_S = 10
MAX_INTERVAL_S = 7 * 86400


def check_interval(seconds: int) -> int:
    """A node's expected interval, or ValueError saying what is allowed."""
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(f"the interval must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S} seconds, got {seconds}")
    return seconds
