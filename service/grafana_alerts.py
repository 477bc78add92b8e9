"""tswarm's Grafana alert rules, as code (grafana-foundation-sdk): a silent node and a low battery.

Two rules of Grafana Alerting, one alert instance per node (label ``node``, the tag):

- **tswarm: node silent** (uid ``tswarm-node-silent``): a node that reported within the last 30 days
  has sent no reading for an hour;
- **tswarm: battery low** (uid ``tswarm-battery-low``): a node's latest ``vbat`` (of the last 30 days)
  is below ``TSWARM_BATTERY_LOW_V`` (default 3.3 V). Nodes that send no ``vbat`` have no instance.

Each rule is query A on the InfluxDB datasource (InfluxQL or Flux, like the dashboards), B the last
value of each node's series (a ``reduce`` expression) and C the condition (a ``threshold`` on B).

InfluxQL cannot list a series that has no points in a time range, so the silent rule's query counts
each node's readings of the last hour and adds zero for every node seen in the 30 days: a silent node
gets 0 instead of disappearing (Grafana would otherwise resolve its alert as a missing series).

:func:`rules` gives the rules as Grafana's alerting provisioning API takes them (``POST
/api/v1/provisioning/alert-rules``), which ``tswarm grafana provision`` sends. The same rules are in
grafana/provisioning/alerting/tswarm.yaml for docker-compose; tests/test_grafana_provision.py checks
that file against what the command sends.
"""
from __future__ import annotations

import json
from typing import Optional

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange

from .grafana_dashboards import BATTERY_LOW_V, DATASOURCE, InfluxQuery
from .influx import MEASUREMENT, TAG_NODE

RULE_GROUP = "tswarm"  # Grafana evaluates a group together; a new group is evaluated every minute
SILENT_UID = "tswarm-node-silent"
BATTERY_UID = "tswarm-battery-low"
SILENT_FOR = "1h"  # no reading for this long: silent
WINDOW_S = 30 * 86400  # the rules look at the last 30 days, as the dashboards' "Last seen" does
EXPRESSIONS = "__expr__"  # the datasource uid of Grafana's server-side expressions
INTERVAL_MS = 1000  # Grafana's defaults for a query of an alert rule, which it stores in each model
MAX_DATA_POINTS = 43200
ORG_ID = 1  # Grafana takes the organisation of the token; the SDK needs one


# -- the queries (A) -------------------------------------------------------------------------------


def influxql_silent() -> str:
    """Per node seen within the time range: its readings in the last hour (0: silent)."""
    recent = (
        f'SELECT count("temperature") AS "recent" FROM "{MEASUREMENT}" WHERE $timeFilter AND time > now() - {SILENT_FOR}'
        f' GROUP BY "{TAG_NODE}"'
    )
    seen = f'SELECT last("temperature") * 0 AS "recent" FROM "{MEASUREMENT}" WHERE $timeFilter GROUP BY "{TAG_NODE}"'
    return f'SELECT sum("recent") AS "recent" FROM ({recent}), ({seen}) WHERE $timeFilter GROUP BY "{TAG_NODE}"'


def influxql_battery() -> str:
    """Each node's latest battery voltage within the time range."""
    return f'SELECT last("vbat") AS "vbat" FROM "{MEASUREMENT}" WHERE $timeFilter GROUP BY "{TAG_NODE}"'


def _flux_from(bucket: str, field: str) -> list[str]:
    return [
        f"from(bucket: {json.dumps(bucket)})",
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f'  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}")',
        f'  |> filter(fn: (r) => r._field == "{field}")',
    ]


def flux_silent(bucket: str) -> str:
    """Per node: its readings in the last hour, one point at the end of the range."""
    return "\n".join([
        *_flux_from(bucket, "temperature"),
        f"  |> map(fn: (r) => ({{r with _value: if int(v: r._time) > int(v: now()) - int(v: {SILENT_FOR}) then 1 else 0}}))",
        "  |> sum()",
        '  |> duplicate(column: "_stop", as: "_time")',
        f'  |> keep(columns: ["_time", "_value", "{TAG_NODE}"])',
    ])


def flux_battery(bucket: str) -> str:
    return "\n".join([
        *_flux_from(bucket, "vbat"),
        "  |> last()",
        f'  |> keep(columns: ["_time", "_value", "{TAG_NODE}"])',
    ])


# -- the rules -------------------------------------------------------------------------------------


def _query(lang: str, query: str) -> alerting.Query:
    datasource = DATASOURCE[lang]
    return (
        alerting.Query("A")
        .datasource_uid(datasource.uid)
        .relative_time_range(RelativeTimeRange(from_val=WINDOW_S, to=0))
        .model(InfluxQuery(lang, "A", query, interval_ms=INTERVAL_MS, max_data_points=MAX_DATA_POINTS))
    )


def _last(ref_id: str = "B") -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(EXPRESSIONS)
        .relative_time_range(RelativeTimeRange(from_val=0, to=0))
        .model(
            expr.TypeReduce().ref_id(ref_id).expression("A").reducer("last")
            .interval_ms(INTERVAL_MS).max_data_points(MAX_DATA_POINTS)
        )
    )


def _threshold(kind: str, value: float, ref_id: str = "C") -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(EXPRESSIONS)
        .relative_time_range(RelativeTimeRange(from_val=0, to=0))
        .model(
            expr.TypeThreshold().ref_id(ref_id).expression("B")
            .conditions([expr.ExprTypeThresholdConditions().evaluator(
                expr.ExprTypeThresholdConditionsEvaluator().type(kind).params([value])
            )])
            .interval_ms(INTERVAL_MS).max_data_points(MAX_DATA_POINTS)
        )
    )


def _rule(uid: str, title: str, folder_uid: str) -> alerting.Rule:
    return (
        alerting.Rule(title)
        .uid(uid)
        .org_id(ORG_ID)
        .folder_uid(folder_uid)
        .rule_group(RULE_GROUP)
        .condition("C")
        .for_val("0s")
        .no_data_state("OK")  # no node at all (in 30 days, or with a battery): nothing to say
        .exec_err_state("Error")
        .is_paused(False)
    )


def silent_rule(lang: str = "influxql", bucket: str = "tswarm", folder_uid: str = "tswarm") -> dict:
    query = influxql_silent() if lang == "influxql" else flux_silent(bucket)
    rule = (
        _rule(SILENT_UID, "tswarm: node silent", folder_uid)
        .with_query(_query(lang, query)).with_query(_last()).with_query(_threshold("lt", 1))
        .labels({"tswarm": "silent"})
        .annotations({
            "summary": "tswarm node {{ $labels.node }} sent no reading for an hour",
            "description": (
                "No reading from {{ $labels.node }} in the last hour; it reported within the last 30 days."
                " Check its power and Wi-Fi (`tswarm node list` shows when it was last seen)."
            ),
        })
    )
    return _to_dict(rule)


def battery_rule(
    lang: str = "influxql", bucket: str = "tswarm", folder_uid: str = "tswarm", battery_low_v: float = BATTERY_LOW_V
) -> dict:
    query = influxql_battery() if lang == "influxql" else flux_battery(bucket)
    rule = (
        _rule(BATTERY_UID, "tswarm: battery low", folder_uid)
        .with_query(_query(lang, query)).with_query(_last()).with_query(_threshold("lt", battery_low_v))
        .labels({"tswarm": "battery_low"})
        .annotations({
            "summary": "tswarm node {{ $labels.node }}: battery low ({{ printf \"%.2f\" $values.B.Value }} V)",
            "description": (
                "The latest battery voltage of {{ $labels.node }} is below "
                f"{battery_low_v:g} V (TSWARM_BATTERY_LOW_V). Charge or replace its battery."
            ),
        })
    )
    return _to_dict(rule)


def rules(
    lang: str = "influxql", bucket: str = "tswarm", folder_uid: str = "tswarm",
    battery_low_v: Optional[float] = None,
) -> list[dict]:
    """Both rules as ``POST /api/v1/provisioning/alert-rules`` takes them."""
    low = BATTERY_LOW_V if battery_low_v is None else battery_low_v
    return [silent_rule(lang, bucket, folder_uid), battery_rule(lang, bucket, folder_uid, low)]


def _to_dict(builder) -> dict:
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))
