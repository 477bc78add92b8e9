"""service/timefmt.py: :func:`rfc3339` writes, for every time tswarm can hold, exactly what it wrote
before its pieces were remembered per minute (``time.gmtime`` + ``time.strftime`` per second, kept
below as it was), across 1970, the 64-bit edges and the leap days; and the cache stays bounded."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from tswarm.timefmt import MAX_NS, MIN_NS, MinuteText, rfc3339


def rfc3339_before(ts_ns: int) -> str:
    """service/timefmt.py's rfc3339 as it was (issue 16), without its one-second cache."""
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{frac:09d}Z"


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


# The days around which a calendar goes wrong first: leap days (2000 is one, 1700, 1800, 1900, 2100,
# 2200 are not), the turn of a year, 1970, and the first and last days tswarm can hold.
EDGE_DAYS = [
    datetime(year, month, day, tzinfo=timezone.utc)
    for year, month, day in [
        (1677, 9, 22), (1700, 2, 28), (1700, 3, 1), (1704, 2, 29), (1800, 2, 28), (1800, 3, 1), (1899, 12, 31),
        (1900, 2, 28), (1900, 3, 1), (1904, 2, 29), (1969, 12, 31), (1970, 1, 1), (1972, 2, 29), (1999, 12, 31),
        (2000, 2, 29), (2000, 3, 1), (2024, 2, 29), (2100, 2, 28), (2100, 3, 1), (2200, 2, 28), (2260, 2, 29),
        (2262, 4, 10),
    ]
]
DAY_NS = 86_400 * 10**9

times = st.one_of(
    st.integers(MIN_NS, MAX_NS),
    st.integers(-10**12, 10**12),  # around 1970, both sides
    st.sampled_from([MIN_NS, MIN_NS + 1, MAX_NS, MAX_NS - 1, -1, 0, 1, -10**9, 10**9 - 1, -DAY_NS - 1]),
    st.builds(lambda day, offset: ns(day) + offset, st.sampled_from(EDGE_DAYS), st.integers(-DAY_NS, 2 * DAY_NS)),
)


@settings(max_examples=2000, deadline=None)
@given(times)
def test_rfc3339_writes_what_it_wrote_before(ts):
    assert rfc3339(ts) == rfc3339_before(ts)


@settings(deadline=None)
@given(st.lists(times, max_size=50))
def test_many_times_in_any_order_each_as_before(moments):
    """The minute cache holds what its key alone decides: any order of times gives each its own text."""
    for ts in moments + sorted(moments):
        assert rfc3339(ts) == rfc3339_before(ts)


def test_the_64_bit_edges_and_1970():
    assert rfc3339(MIN_NS) == "1677-09-21T00:12:43.145224192Z"
    assert rfc3339(MAX_NS) == "2262-04-11T23:47:16.854775807Z"
    assert rfc3339(-1) == "1969-12-31T23:59:59.999999999Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339(ns(datetime(2000, 2, 29, 23, 59, 59, tzinfo=timezone.utc)) + 5) == "2000-02-29T23:59:59.000000005Z"


def test_the_minute_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(MinuteText, "MAX_ENTRIES", 8)
    cache = MinuteText()
    for minute in range(0, 100 * 1440, 7):  # 100 days, minute by minute (every 7th)
        assert cache[minute] == rfc3339_before(minute * 60 * 10**9)[:17]
        assert len(cache) <= 8 and len(cache.days) <= 8
