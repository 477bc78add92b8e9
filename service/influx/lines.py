"""Readings as InfluxDB line protocol: what influxdb-client's ``Point`` writes, byte for byte.

One point a reading (see :mod:`tswarm.influx`). :class:`LineEncoder` is the fast way the
forwarder uses; :func:`point` and :func:`line_protocol` the plain one.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from influxdb_client import Point, WritePrecision

from ..storage import OutboxReading
from . import MEASUREMENT, TAG_NODE


def point(reading: OutboxReading) -> Point:
    return (
        Point(MEASUREMENT)
        .tag(TAG_NODE, reading.node)
        .field("temperature", float(reading.temperature))
        .field("humidity", float(reading.humidity))
        .time(reading.ts, WritePrecision.NS)
    )


def line_protocol(readings: Iterable[OutboxReading]) -> bytes:
    """The readings as line protocol, one point a line (a fresh :class:`LineEncoder`)."""
    return LineEncoder().encode(readings)


class LineEncoder:
    """Line protocol of readings, byte for byte what ``point(reading).to_line_protocol()`` gives, at a
    tenth of the cost.

    ``Point`` renders each distinct piece once: a node's series key (``climate,node=NAME``) and the
    text of each distinct temperature and humidity (``temperature=23.4``). A line joins the pieces
    in Point's own order (fields sorted by name) with the timestamp. A DHT sensor reports a few thousand
    distinct values, so after a short warm-up a line is one f-string; building a ``Point`` per
    reading cost ~7 µs and capped forwarding at a third of InfluxDB's speed (benchmarks/README.md).
    Zero and non-finite values always go through a whole ``Point`` (``-0.0 == 0.0`` would share a
    cache entry, and Point leaves non-finite fields out). tests/influx/test_lines.py checks the
    identity on generated readings.
    """

    MAX_CACHED = 100_000  # distinct values per field (and nodes); past it a cache starts again

    def __init__(self) -> None:
        self._keys: dict = {}  # node (name or journal id) -> series key
        self._temperature: dict[float, str] = {}
        self._humidity: dict[float, str] = {}

    def encode(self, readings: Iterable[OutboxReading]) -> bytes:
        return self.encode_rows(readings, _SAME)

    def encode_rows(self, rows: Iterable[tuple], names: Mapping) -> bytes:
        """Rows of ``(id, node, ts, temperature, humidity)``; ``names[node]`` is the node's name
        (:meth:`Storage.outbox_rows` gives node ids and :meth:`Storage.node_names` their names).
        An encoder's ``node`` must always mean the same node (one encoder per journal)."""
        keys, temperature, humidity = self._keys, self._temperature, self._humidity
        lines = []
        append = lines.append
        for id_, node, ts, t, h in rows:
            try:
                append(f"{keys[node]} {humidity[h]},{temperature[t]} {ts}")
            except KeyError:
                append(self._learn(node, OutboxReading(id_, names[node], ts, t, h)))
        return "\n".join(lines).encode()

    def _learn(self, node, reading: OutboxReading) -> str:
        """The reading's line from a whole ``Point``; remembers the pieces that may be reused."""
        line = point(reading).to_line_protocol()
        if node not in self._keys:
            key = point(reading._replace(temperature=1.0, humidity=1.0)).to_line_protocol()
            self._remember(self._keys, node, key[: key.rindex(" humidity=")])
        for cache, name, value in (
            (self._temperature, "temperature", reading.temperature),
            (self._humidity, "humidity", reading.humidity),
        ):
            if value and math.isfinite(value) and value not in cache:
                text = Point(MEASUREMENT).field(name, float(value)).to_line_protocol()
                self._remember(cache, value, text[len(MEASUREMENT) + 1:])
        return line

    def _remember(self, cache: dict, key, text: str) -> None:
        if len(cache) >= self.MAX_CACHED:
            cache.clear()
        cache[key] = text


class _Same:
    """``names[node] == node``: for rows that carry the node's name already (Readings)."""

    def __getitem__(self, node):
        return node


_SAME = _Same()
