"""The Grafana dashboards, as code (grafana-foundation-sdk): an overview and a per-node dashboard.

Each comes in two query languages over the same points (measurement ``climate``, tag ``node``,
fields ``temperature`` and ``humidity``, and from newer firmware ``vbat`` (volts) and ``rssi`` (dBm);
see service/influx/):

- **InfluxQL**, for InfluxDB 1.x and for the v1-compatibility endpoint of InfluxDB 2.x
  (datasource uid ``tswarm-influxql``);
- **Flux**, for InfluxDB 2.x with a Flux datasource (uid ``tswarm-flux``).

``python -m tswarm.grafana_dashboards grafana/`` (``make grafana``) writes them to
``grafana/dashboards/{influxql,flux}/*.json``, the files docker-compose mounts into Grafana;
``tswarm grafana provision`` sends the same dashboards through Grafana's API. A test keeps the
checked-in files equal to what this module produces.

The SDK has no builder for InfluxDB queries, so :class:`InfluxQuery` is a small one of our own
(a ``Builder[Dataquery]`` producing the JSON Grafana's InfluxDB datasource stores).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from grafana_foundation_sdk.builders import common, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from .influx import MEASUREMENT, TAG_NODE
from .settings import Config

INFLUXQL_UID = "tswarm-influxql"
FLUX_UID = "tswarm-flux"
LANGUAGES = ("influxql", "flux")
DATASOURCE = {lang: DataSourceRef(type_val="influxdb", uid=uid) for lang, uid in (("influxql", INFLUXQL_UID), ("flux", FLUX_UID))}

# A node reports every five minutes; three missed wakes and it counts as silent.
SILENT_AFTER = "15m"
LAST_SEEN_WINDOW = "30d"  # how far back "last seen" looks
FIELDS = (("temperature", "Temperature", "celsius"), ("humidity", "Humidity", "humidity"))
# Telemetry of newer firmware (only nodes that send it have these series): battery volts, Wi-Fi RSSI.
TELEMETRY = (("vbat", "Battery", "volt"), ("rssi", "Signal", "dBm"))
# TSWARM_BATTERY_LOW_V's default: the checked-in files show it; `tswarm grafana provision` the configured one.
BATTERY_LOW_V: float = Config.battery_low_v  # TSWARM_BATTERY_LOW_V's default


# -- queries -------------------------------------------------------------------------------------


@dataclass
class InfluxTarget(cogvariants.Dataquery):
    """One query of Grafana's InfluxDB datasource (raw InfluxQL or Flux)."""

    ref_id: str
    query: str
    datasource: DataSourceRef
    result_format: Optional[str] = None  # InfluxQL only: "time_series" or "table"
    alias: Optional[str] = None  # InfluxQL only: series name, e.g. "$tag_node"
    interval_ms: Optional[int] = None  # alert rules: Grafana keeps these two in a query's model
    max_data_points: Optional[int] = None

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"refId": self.ref_id, "datasource": self.datasource.to_json(), "query": self.query}
        if self.result_format is not None:
            payload["rawQuery"] = True
            payload["resultFormat"] = self.result_format
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.interval_ms is not None:
            payload["intervalMs"] = self.interval_ms
        if self.max_data_points is not None:
            payload["maxDataPoints"] = self.max_data_points
        return payload


class InfluxQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(
        self, lang: str, ref_id: str, query: str, result_format: str = "time_series", alias: Optional[str] = None,
        interval_ms: Optional[int] = None, max_data_points: Optional[int] = None,
    ):
        self._target = InfluxTarget(
            ref_id, query, DATASOURCE[lang], result_format if lang == "influxql" else None,
            alias if lang == "influxql" else None, interval_ms, max_data_points,
        )

    def build(self) -> InfluxTarget:
        return self._target


def _where_node(node_var: bool) -> str:
    return f'"{TAG_NODE}" =~ /^$node$/ AND ' if node_var else ""


def influxql_series(field: str, node_var: bool) -> str:
    """Mean of ``field`` per Grafana interval, one series per node."""
    return (
        f'SELECT mean("{field}") AS "{field}" FROM "{MEASUREMENT}" WHERE {_where_node(node_var)}$timeFilter '
        f'GROUP BY time($__interval), "{TAG_NODE}" fill(none)'
    )


def influxql_last_seen(node_var: bool) -> str:
    """Each node's latest reading (a single selector, so the row's time is the reading's)."""
    return (
        f'SELECT last("temperature") AS "temperature" FROM "{MEASUREMENT}" '
        f'WHERE {_where_node(node_var)}time > now() - {LAST_SEEN_WINDOW} GROUP BY "{TAG_NODE}"'
    )


def influxql_recent() -> str:
    """Readings per node within the silence limit; a node missing here has gone silent."""
    return (
        f'SELECT count("temperature") AS "recent" FROM "{MEASUREMENT}" '
        f'WHERE time > now() - {SILENT_AFTER} GROUP BY "{TAG_NODE}"'
    )


def _flux_from(field: Optional[str], node_var: bool) -> str:
    lines = [
        'from(bucket: "${bucket}")',
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f'  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}")',
    ]
    if field:
        lines.append(f'  |> filter(fn: (r) => r._field == "{field}")')
    if node_var:
        lines.append(f'  |> filter(fn: (r) => r.{TAG_NODE} == "${{node}}")')
    return "\n".join(lines)


def flux_series(field: str, node_var: bool) -> str:
    return (
        _flux_from(field, node_var)
        + "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"
        + f'\n  |> keep(columns: ["_time", "_value", "{TAG_NODE}"])'
    )


def flux_last_seen(node_var: bool, silent_only: bool = False) -> str:
    query = _flux_from("temperature", node_var).replace(
        "range(start: v.timeRangeStart, stop: v.timeRangeStop)", f"range(start: -{LAST_SEEN_WINDOW})"
    )
    query += "\n  |> last()"
    if silent_only:
        query += f"\n  |> filter(fn: (r) => int(v: r._time) < int(v: now()) - int(v: {SILENT_AFTER}))"
    query += f'\n  |> keep(columns: ["_time", "{TAG_NODE}", "_value"])\n  |> group()'
    return query


# -- panels --------------------------------------------------------------------------------------


def _field_panel(
    lang: str, field: str, title: str, unit: str, node_var: bool, battery_low_v: float = BATTERY_LOW_V
) -> timeseries.Panel:
    query = influxql_series(field, node_var) if lang == "influxql" else flux_series(field, node_var)
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE[lang])
        .with_target(InfluxQuery(lang, "A", query, alias="$tag_node"))
        .unit(unit)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "min", "max"])
        )
        .span(12)
        .height(9)
    )
    if lang == "flux":
        panel.display_name("${__field.labels.%s}" % TAG_NODE)  # one series per node, named after it
    if field == "vbat":
        panel.description(
            f"Battery or supply voltage of the nodes that measure it; the dashed line is the low-battery"
            f" threshold ({battery_low_v:g} V, TSWARM_BATTERY_LOW_V)."
        )
        panel.decimals(2)
        panel.thresholds(
            db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
                [Threshold(value=None, color="red"), Threshold(value=battery_low_v, color="green")]
            )
        )
        panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))
    elif field == "rssi":
        panel.description("Wi-Fi signal strength (RSSI) of the nodes that report it: about -30 dBm is excellent, below -80 poor.")
    return panel


def _organize(rename: dict[str, str], exclude: tuple[str, ...] = ()) -> DataTransformerConfig:
    return DataTransformerConfig(
        id_val="organize", options={"excludeByName": {name: True for name in exclude}, "renameByName": rename}
    )


def _last_seen_panel(lang: str) -> table.Panel:
    panel = (
        table.Panel()
        .show_header(True)
        .title("Last seen")
        .description("Every node's latest reading in the last 30 days, oldest first.")
        .datasource(DATASOURCE[lang])
        .span(12)
        .height(9)
        .sort_by([common.TableSortByFieldState().display_name("Last seen").desc(False)])
        .override_by_name("Last seen", [DynamicConfigValue(id_val="unit", value="dateTimeFromNow")])
    )
    if lang == "influxql":
        panel.with_target(InfluxQuery(lang, "A", influxql_last_seen(False), result_format="table"))
        panel.with_transformation(_organize({"Time": "Last seen", "temperature": "Temperature"}))
    else:
        panel.with_target(InfluxQuery(lang, "A", flux_last_seen(False)))
        panel.with_transformation(_organize({"_time": "Last seen", "_value": "Temperature"}))
    return panel


def _silent_panel(lang: str) -> table.Panel:
    panel = (
        table.Panel()
        .show_header(True)
        .title("Nodes gone silent")
        .description(
            f"Nodes with no reading in the last {SILENT_AFTER} (three missed wakes) that reported within "
            f"{LAST_SEEN_WINDOW}. An empty table is good news."
        )
        .datasource(DATASOURCE[lang])
        .span(12)
        .height(9)
        .no_value("every node reported recently")
        .sort_by([common.TableSortByFieldState().display_name("Last seen").desc(False)])
        .override_by_name("Last seen", [DynamicConfigValue(id_val="unit", value="dateTimeFromNow")])
    )
    if lang == "influxql":
        # InfluxQL cannot list what has no points, so: last seen (A) joined with recent counts (B),
        # keeping the rows without a recent count.
        panel.with_target(InfluxQuery(lang, "A", influxql_last_seen(False), result_format="table"))
        panel.with_target(InfluxQuery(lang, "B", influxql_recent(), result_format="table"))
        panel.with_transformation(DataTransformerConfig(id_val="joinByField", options={"byField": TAG_NODE, "mode": "outer"}))
        panel.with_transformation(
            DataTransformerConfig(
                id_val="filterByValue",
                options={
                    "type": "include",
                    "match": "all",
                    "filters": [{"fieldName": "recent", "config": {"id": "isNull", "options": {}}}],
                },
            )
        )
        panel.with_transformation(
            _organize({"Time 1": "Last seen", "temperature": "Temperature"}, exclude=("Time 2", "recent"))
        )
    else:
        panel.with_target(InfluxQuery(lang, "A", flux_last_seen(False, silent_only=True)))
        panel.with_transformation(_organize({"_time": "Last seen", "_value": "Temperature"}))
    return panel


def _stat_panel(lang: str, title: str, influxql: str, flux: str, unit: Optional[str] = None) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE[lang])
        .with_target(InfluxQuery(lang, "A", influxql if lang == "influxql" else flux, result_format="table"))
        .span(6)
        .height(4)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if unit:
        panel.unit(unit)
    return panel


# -- dashboards ----------------------------------------------------------------------------------


def _dashboard(uid: str, title: str, lang: str, bucket: str) -> db.Dashboard:
    suffix = "" if lang == "influxql" else " (Flux)"
    builder = (
        db.Dashboard(title + suffix)
        .uid(uid if lang == "influxql" else uid + "-flux")
        .tags(["tswarm", lang])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
    )
    if lang == "flux":
        builder.with_variable(
            db.ConstantVariable("bucket").value(bucket)
            .description("The bucket tswarm writes to (TSWARM_INFLUX_BUCKET).")
        )
    return builder


def overview(lang: str = "influxql", bucket: str = "tswarm", battery_low_v: float = BATTERY_LOW_V) -> dict:
    """Every node's temperature, humidity, battery and signal, when each was last seen, and which went silent."""
    builder = _dashboard("tswarm-overview", "tswarm overview", lang, bucket)
    for field, title, unit in FIELDS + TELEMETRY:
        builder.with_panel(_field_panel(lang, field, title, unit, node_var=False, battery_low_v=battery_low_v))
    builder.with_panel(_last_seen_panel(lang))
    builder.with_panel(_silent_panel(lang))
    return to_dict(builder)


def node(lang: str = "influxql", bucket: str = "tswarm", battery_low_v: float = BATTERY_LOW_V) -> dict:
    """One node (the ``node`` variable): its temperature, humidity, latest values, when it last reported,
    and its battery and signal."""
    builder = _dashboard("tswarm-node", "tswarm node", lang, bucket)
    if lang == "influxql":
        values_query: str | dict = f'SHOW TAG VALUES FROM "{MEASUREMENT}" WITH KEY = "{TAG_NODE}"'
    else:
        values_query = (
            'import "influxdata/influxdb/schema"\n'
            f'schema.measurementTagValues(bucket: "${{bucket}}", measurement: "{MEASUREMENT}", tag: "{TAG_NODE}")'
        )
    builder.with_variable(
        db.QueryVariable("node")
        .label("Node")
        .datasource(DATASOURCE[lang])
        .query(values_query)
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .current(VariableOption(selected=False, text="", value=""))
    )
    last = {
        field: (
            f'SELECT last("{field}") AS "{field}" FROM "{MEASUREMENT}" WHERE {_where_node(True)}$timeFilter',
            _flux_from(field, True) + "\n  |> last()\n  |> keep(columns: [\"_value\"])",
        )
        for field, _, _ in FIELDS
    }
    builder.with_panel(_stat_panel(lang, "Temperature now", *last["temperature"], unit="celsius"))
    builder.with_panel(_stat_panel(lang, "Humidity now", *last["humidity"], unit="humidity"))
    builder.with_panel(
        _stat_panel(
            lang, "Last seen", influxql_last_seen(True),
            flux_last_seen(True) + '\n  |> map(fn: (r) => ({_value: int(v: r._time) / 1000000}))', unit="dateTimeFromNow",
        ).reduce_options(_reduce_time_options())
    )
    builder.with_panel(
        _stat_panel(
            lang, "Readings in range",
            f'SELECT count("temperature") AS "readings" FROM "{MEASUREMENT}" WHERE {_where_node(True)}$timeFilter',
            _flux_from("temperature", True) + "\n  |> count()\n  |> keep(columns: [\"_value\"])",
        )
    )
    for field, title, unit in FIELDS + TELEMETRY:
        builder.with_panel(_field_panel(lang, field, title, unit, node_var=True, battery_low_v=battery_low_v))
    return to_dict(builder)


def _reduce_time_options():
    """The stat shows the time of the latest row (InfluxQL's ``Time`` column), not its value."""
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("/^(Time|_value)$/").values(False)


def to_dict(builder: cogbuilder.Builder) -> dict:
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def dashboards() -> dict[str, dict]:
    """Every dashboard by its file path under ``grafana/dashboards/`` (Flux ones read bucket ``tswarm``)."""
    return {
        f"{lang}/{name}.json": build(lang)
        for lang in LANGUAGES
        for name, build in (("overview", overview), ("node", node))
    }


def dump(dashboard: dict) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def write_all(grafana_dir: Path) -> list[Path]:
    written = []
    for relative, dashboard in dashboards().items():
        path = Path(grafana_dir) / "dashboards" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(dashboard))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "grafana")):
        print(path)
