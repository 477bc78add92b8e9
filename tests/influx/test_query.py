"""The history reads' queries with the telemetry (service/influx/query.py, ``with_extra=True``).

InfluxQL runs against the real InfluxDB 1.x in tests/integration/test_influx.py. No InfluxDB 2.x
runs here (VictoriaMetrics speaks no Flux), so the Flux is compared as text, as tests/test_history.py
does for the query without the telemetry."""
from tswarm.influx.query import flux, influxql

NS = 1_000_000_000
T0 = 1_764_000_000 * NS


def test_influxql_with_extra_selects_the_telemetry_fields_and_without_it_is_as_before():
    assert influxql(T0, T0 + NS, "attic") == (
        f'SELECT "temperature", "humidity", "node" FROM "climate" WHERE time >= {T0} AND time < {T0 + NS}'
        " AND \"node\" = 'attic'"
    )
    assert influxql(None, T0, None, with_extra=True) == (
        f'SELECT "temperature", "humidity", "vbat", "rssi", "awake_ms", "lost", "node" FROM "climate" WHERE time < {T0}'
    )


def test_flux_with_extra_keeps_the_telemetry_columns_a_record_may_lack():
    assert flux("tswarm", T0, T0 + NS, None, limit=5, with_extra=True) == "\n".join([
        'from(bucket: "tswarm")',
        "  |> range(start: 2025-11-24T16:00:00.000000000Z, stop: 2025-11-24T16:00:01.000000000Z)",
        '  |> filter(fn: (r) => r._measurement == "climate" and (r._field == "temperature" or r._field == "humidity"'
        ' or r._field == "vbat" or r._field == "rssi" or r._field == "awake_ms" or r._field == "lost"))',
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "  |> group()",
        '  |> sort(columns: ["_time", "node"])',
        "  |> limit(n: 5)",
        '  |> keep(columns: ["_time", "node", "temperature", "humidity", "vbat", "rssi", "awake_ms", "lost"])',
        "  |> map(fn: (r) => ({r with ts: int(v: r._time)}))",
    ])
