"""The forwarder's delivery of one batch (service/forwarder.py ``Delivery`` over service/influx.py's
targets) against the real InfluxDB 1.x: what a real server can be made to do is tested here, not in
tests/test_forwarder.py, whose stand-in InfluxDB plays only what no real one does on cue (429 and 503
with a chosen Retry-After, 413)."""
from __future__ import annotations

import pytest

from tswarm.forwarder import Delivery
from tswarm.influx.lines import line_protocol
from tswarm.influx.write import V1Target
from tests.test_forwarder import Sleeps, readings

pytestmark = pytest.mark.integration


def points(server, db: str) -> list[list]:
    """Every point of ``climate`` in time order: ``[ns, humidity, node, temperature]``."""
    return server.rows("SELECT * FROM climate ORDER BY time", db)


def expected_points(batch) -> list[list]:
    return [[r.ts, r.humidity, r.node, r.temperature] for r in batch]


async def test_a_refused_point_is_isolated_the_rest_written_in_order(influxdb1_factory):
    # This InfluxDB takes two series per database: node "bad", a third series, gets "400 partial write".
    server = influxdb1_factory(**{"max-series-per-database": 2})
    db = server.new_database()
    batch = readings("a", "b", "bad", "a", "b", "a", "bad")
    target = V1Target(server.url, db)
    try:
        rejected = await Delivery(target, 60, sleep=Sleeps()).deliver(batch)
    finally:
        await target.close()
    assert [r for r, _ in rejected] == [batch[2], batch[6]]
    assert all(reason.startswith("HTTP 400: partial write: max-series-per-database limit exceeded")
               for _, reason in rejected), rejected
    assert points(server, db) == expected_points([r for r in batch if r.node != "bad"])


async def test_v1_creates_a_missing_database_then_writes(influxdb1):
    db = influxdb1.new_database()
    assert [db] not in influxdb1.rows("SHOW DATABASES", None)
    batch = readings("a")
    target = V1Target(influxdb1.url, db)
    try:
        await target.write(target.prepare(line_protocol(batch)), 1)
    finally:
        await target.close()
    assert [db] in influxdb1.rows("SHOW DATABASES", None)
    assert points(influxdb1, db) == expected_points(batch)
