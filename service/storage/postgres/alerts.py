"""Alerts: what the alerts last judged of each node, and the outbox of alerts for the webhook.

As in the SQLite engine (service/storage/sqlite/alerts.py): ``alert_states``, one row per judged
node, and ``alerts``, every alert queued, in order (``id``), until some time after its delivery. A
change of a node's state and the alerts it causes go in one transaction, and the change applies
only while the state it was judged from is still the stored one: the ``UPDATE`` (or ``INSERT ... ON
CONFLICT DO NOTHING``) matches no row once another judge changed it, and two leaders overlapping
for a moment (service/leader.py) queue each alert once. Only the leader writes here, so the ids
of ``alerts`` are in the order of the commits that queued them.
"""
from __future__ import annotations

from typing import Iterable

import psycopg

from ..interface import AlertChange, AlertState, PendingAlert
from .connection import Connections

ALERTS_TABLES = (
    """CREATE TABLE alert_states (         -- what service/alerts.py last judged of each node
    node       text COLLATE "C" PRIMARY KEY,
    health     text,                      -- service/health.py's state
    battery    text,                      -- 'low', 'ok'; NULL: no voltage judged yet
    changed_at bigint NOT NULL            -- ns
)""",
    """CREATE TABLE alerts (               -- the outbox of the alert webhook, in the order queued
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node         text COLLATE "C" NOT NULL,
    event        text NOT NULL,           -- late, silent, ok, battery_low, battery_ok
    body         text NOT NULL,           -- the JSON body, sent as is
    created_at   bigint NOT NULL,         -- ns
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    delivered_at bigint                   -- NULL: still to deliver
)""",
    "CREATE INDEX alerts_pending ON alerts (node, id) WHERE delivered_at IS NULL",
)

# The oldest undelivered alert of each node: the next of its own order.
PENDING = (
    "SELECT id, node, event, body, created_at, attempts FROM alerts"
    " WHERE id IN (SELECT MIN(id) FROM alerts WHERE delivered_at IS NULL GROUP BY node) ORDER BY id LIMIT %s"
)

SAME = "node = %s AND health IS NOT DISTINCT FROM %s::text AND battery IS NOT DISTINCT FROM %s::text"


class AlertsRoom(Connections):
    def alert_states(self) -> dict[str, AlertState]:
        rows = self._all("SELECT node, health, battery FROM alert_states")
        return {node: AlertState(health, battery) for node, health, battery in rows}

    def record_alert_changes(self, changes: Iterable[AlertChange], at_ns: int) -> list[AlertChange]:
        applied = []
        with self._transaction() as conn:
            for change in changes:
                if not _apply(conn, change, at_ns):
                    continue
                if change.alerts:
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO alerts (node, event, body, created_at) VALUES (%s, %s, %s, %s)",
                            [(change.node, event, body, at_ns) for event, body in change.alerts],
                        )
                applied.append(change)
        return applied

    def pending_alerts(self, limit: int = 100) -> list[PendingAlert]:
        return [PendingAlert(*row) for row in self._all(PENDING, (limit,))]

    def count_pending_alerts(self) -> int:
        return self._one("SELECT COUNT(*) FROM alerts WHERE delivered_at IS NULL")[0]

    def alert_delivered(self, alert_id: int, at_ns: int) -> None:
        with self._connection() as conn:
            conn.execute("UPDATE alerts SET delivered_at = %s WHERE id = %s AND delivered_at IS NULL", (at_ns, alert_id))

    def alert_failed(self, alert_id: int, error: str, at_ns: int) -> None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE alerts SET attempts = attempts + 1, last_error = %s WHERE id = %s AND delivered_at IS NULL",
                (error, alert_id),
            )

    def prune_alerts(self, before_ns: int) -> int:
        with self._connection() as conn:
            return conn.execute("DELETE FROM alerts WHERE delivered_at < %s", (before_ns,)).rowcount


def _apply(conn: psycopg.Connection, change: AlertChange, at_ns: int) -> bool:
    """Change one node's row if it still holds ``change.before``; whether it did."""
    before, after = change.before, change.after
    if before is None and after is None:
        return False
    if before is None:
        return conn.execute(
            "INSERT INTO alert_states (node, health, battery, changed_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (node) DO NOTHING", (change.node, after.health, after.battery, at_ns),
        ).rowcount == 1
    if after is None:
        return conn.execute(
            f"DELETE FROM alert_states WHERE {SAME}", (change.node, before.health, before.battery)
        ).rowcount == 1
    return conn.execute(
        f"UPDATE alert_states SET health = %s, battery = %s, changed_at = %s WHERE {SAME}",
        (after.health, after.battery, at_ns, change.node, before.health, before.battery),
    ).rowcount == 1
