"""Readings as InfluxDB line protocol: what influxdb-client's ``Point`` writes, byte for byte.

One point a reading (see :mod:`tswarm.influx`), with the telemetry the node sent (``vbat``,
``rssi``, ``awake_ms``, ``lost``) as fields of the same point, only those present.
:class:`LineEncoder` is the way the forwarder uses; :func:`line_protocol` a fresh one.

This module does not import influxdb-client: importing it costs about a second of CPU (numpy,
reactivex, its generated API classes), most of what a `tswarm forward` of a million readings spends
besides the work (benchmarks/README.md, "Forward"). :func:`_line` writes a point by ``Point``'s own
rules (``Point.to_line_protocol``: escaping, fields sorted by name, floats as ``str()`` without a
trailing ``.0``, non-finite floats left out, integers with ``i``); tests/influx/test_lines.py holds
it to a ``Point`` built per reading, on generated readings and any text as a node name.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Union

from ..storage import EXTRA_FIELDS, OutboxReading, OutboxReadingExtra
from . import EXTRA_TYPES, MEASUREMENT, TAG_NODE

AnyReading = Union[OutboxReading, OutboxReadingExtra]

# influxdb_client.client.write.point's escapes: a measurement's, and a tag's or field's key and value.
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})


def _tag_value(value: str) -> str:
    text = value.translate(_ESCAPE_KEY)
    return text + " " if text.endswith("\\") else text  # as Point: a trailing backslash would escape the space


def _field(name: str, value, kind: type) -> str:
    """``name=value`` as Point writes a field of ``kind`` (float or int); "" for a non-finite float (left out)."""
    if kind is int:
        return f"{name.translate(_ESCAPE_KEY)}={int(value)}i"
    value = float(value)
    if not math.isfinite(value):
        return ""
    text = str(value)
    return f"{name.translate(_ESCAPE_KEY)}={text[:-2] if text.endswith('.0') else text}"


def _line(reading: AnyReading) -> str:
    """The reading's line, as ``Point(MEASUREMENT).tag(TAG_NODE, node).field(...).time(ts, NS)`` writes it:
    ``reading`` is an :class:`OutboxReading`, or an :class:`OutboxReadingExtra` whose telemetry (None:
    not sent) becomes fields of their own type; "" when no field is left (Point's answer too)."""
    fields = [("temperature", reading.temperature, float), ("humidity", reading.humidity, float)]
    fields += [(name, value, kind) for name, kind, value in zip(EXTRA_FIELDS, EXTRA_TYPES, reading[5:]) if value is not None]
    texts = [text for text in (_field(name, value, kind) for name, value, kind in sorted(fields, key=lambda f: f[0])) if text]
    if not texts:
        return ""
    node = _tag_value(str(reading.node))
    tags = f",{TAG_NODE.translate(_ESCAPE_KEY)}={node}" if node else ""
    return f"{MEASUREMENT.translate(_ESCAPE_MEASUREMENT)}{tags} {','.join(texts)} {int(reading.ts)}"


def line_protocol(readings: Iterable[AnyReading]) -> bytes:
    """The readings as line protocol, one point a line (a fresh :class:`LineEncoder`)."""
    return LineEncoder().encode(readings)


class LineEncoder:
    """Line protocol of readings, byte for byte what a ``Point`` per reading writes, at a tenth of the
    cost of a :func:`_line` per reading.

    :func:`_line` renders each distinct piece once: a node's series key (``climate,node=NAME``) and the
    text of each distinct temperature, humidity and battery voltage (``temperature=23.4``). A line
    joins the pieces in Point's own order (fields sorted by name: ``awake_ms``, ``humidity``, ``lost``,
    ``rssi``, ``temperature``, ``vbat``) with the timestamp; the integer fields are written as Point
    writes an ``int`` (``rssi=-67i``). A DHT sensor reports a few thousand distinct values, so after a
    short warm-up a line is one f-string; building a ``Point`` per reading cost ~7 µs and capped
    forwarding at a third of InfluxDB's speed (benchmarks/README.md). Zero and non-finite values
    always go through a whole :func:`_line` (``-0.0 == 0.0`` would share a cache entry, and Point
    leaves non-finite fields out). tests/influx/test_lines.py checks the identity on generated readings.
    """

    MAX_CACHED = 100_000  # distinct values per field (and nodes); past it a cache starts again

    def __init__(self) -> None:
        self._keys: dict = {}  # node (name or journal id) -> series key
        self._temperature: dict[float, str] = {}
        self._humidity: dict[float, str] = {}
        self._vbat: dict[float, str] = {}

    def encode(self, readings: Iterable[AnyReading]) -> bytes:
        return self.encode_rows(readings, _SAME)

    def encode_rows(self, rows: Iterable[tuple], names: Mapping) -> bytes:
        """Rows of ``(id, node, ts, temperature, humidity)``, or with the telemetry after them
        (``vbat, rssi, awake_ms, lost``, None where not sent; ``outbox_rows(..., with_extra=True)``),
        or with one None after them in its place (``outbox_rows(..., lean=True)``: no telemetry);
        ``names[node]`` is the node's name (:meth:`Storage.outbox_rows` gives node ids and
        :meth:`Storage.node_names` their names). An encoder's ``node`` must always mean the same
        node (one encoder per journal)."""
        keys, temperature, humidity = self._keys, self._temperature, self._humidity
        lines = []
        append = lines.append
        for row in rows:
            node = row[1]
            try:
                if len(row) != 9 or row[5] is row[6] is row[7] is row[8] is None:
                    append(f"{keys[node]} {humidity[row[4]]},{temperature[row[3]]} {row[2]}")
                else:
                    append(self._with_extra(keys[node], humidity[row[4]], temperature[row[3]], row))
            except KeyError:
                append(self._learn(node, row, names))
        return "\n".join(lines).encode()

    def _with_extra(self, key: str, humidity: str, temperature: str, row: tuple) -> str:
        """The line of a row with telemetry, from cached pieces (KeyError: a ``vbat`` not cached)."""
        vbat, rssi, awake_ms, lost = row[5:9]
        fields = [] if awake_ms is None else [f"awake_ms={awake_ms}i"]
        fields.append(humidity)
        if lost is not None:
            fields.append(f"lost={lost}i")
        if rssi is not None:
            fields.append(f"rssi={rssi}i")
        fields.append(temperature)
        if vbat is not None:
            fields.append(self._vbat[vbat])
        return f"{key} {','.join(fields)} {row[2]}"

    def _learn(self, node, row: tuple, names: Mapping) -> str:
        """The row's whole line (:func:`_line`); remembers the pieces that may be reused."""
        id_, _, ts, t, h = row[:5]
        name = names[node]
        reading = OutboxReadingExtra(id_, name, ts, t, h, *row[5:9])
        line = _line(reading)
        if node not in self._keys:
            key = _line(OutboxReading(id_, name, ts, 1.0, 1.0))
            self._remember(self._keys, node, key[: key.rindex(" humidity=")])
        for cache, field, value in (
            (self._temperature, "temperature", t),
            (self._humidity, "humidity", h),
            (self._vbat, "vbat", reading.vbat),
        ):
            if value and math.isfinite(value) and value not in cache:
                self._remember(cache, value, _field(field, value, float))
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
