"""How a node's health is judged (service/health.py): never, ok, late, silent, halted."""
from __future__ import annotations

import pytest

from tswarm.health import health
from tests.conftest import NS, T0


@pytest.mark.parametrize(
    "age_s, interval_s, halted, expected",
    [
        (None, 300, False, "never"),
        (10, 300, False, "ok"),
        (450, 300, False, "ok"),  # within 1.5 intervals
        (451, 300, False, "late"),  # missed a wake
        (3599, 300, False, "late"),
        (3600, 300, False, "silent"),
        (5000, 3600, False, "ok"),  # an hourly node is not silent after an hour
        (5401, 3600, False, "silent"),
        (10, 300, True, "halted"),
        (None, 300, True, "halted"),
    ],
)
def test_health_is_judged_from_the_last_reading_and_the_interval(age_s, interval_s, halted, expected):
    now = T0 + 10_000 * NS
    last = None if age_s is None else now - age_s * NS
    assert health(now, last, interval_s, halted) == expected

