"""Alerts: what the alerts last judged of each node, and the outbox of alerts for the webhook.

Two tables (:data:`ALERTS_TABLES`, added by the schema step ``_add_alerts``): ``alert_states``, one
row per judged node, and ``alerts``, every alert queued, in order (``id``), until some time after
its delivery. A change of a node's state and the alerts it causes go in one transaction, and the
change applies only while the state it was judged from is still the stored one (a compare-and-set
on the row), so two judges at once queue each alert once (service/alerts.py).
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

from ..interface import AlertChange, AlertState, PendingAlert
from .schema import transaction

ALERTS_TABLES = (
    """CREATE TABLE alert_states (         -- what service/alerts.py last judged of each node
    node       TEXT PRIMARY KEY,
    health     TEXT,                      -- service/health.py's state
    battery    TEXT,                      -- 'low', 'ok'; NULL: no voltage judged yet
    changed_at INTEGER NOT NULL           -- ns
)""",
    """CREATE TABLE alerts (               -- the outbox of the alert webhook, in the order queued
    id           INTEGER PRIMARY KEY,
    node         TEXT NOT NULL,
    event        TEXT NOT NULL,           -- late, silent, ok, battery_low, battery_ok
    body         TEXT NOT NULL,           -- the JSON body, sent as is
    created_at   INTEGER NOT NULL,        -- ns
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at INTEGER                  -- NULL: still to deliver
)""",
    "CREATE INDEX alerts_pending ON alerts (node, id) WHERE delivered_at IS NULL",
)

# The oldest undelivered alert of each node: the next of its own order.
PENDING = (
    "SELECT id, node, event, body, created_at, attempts FROM alerts"
    " WHERE id IN (SELECT MIN(id) FROM alerts WHERE delivered_at IS NULL GROUP BY node) ORDER BY id LIMIT ?"
)


class AlertsRoom:
    conn: sqlite3.Connection

    def alert_states(self) -> dict[str, AlertState]:
        rows = self.conn.execute("SELECT node, health, battery FROM alert_states").fetchall()
        return {node: AlertState(health, battery) for node, health, battery in rows}

    def record_alert_changes(self, changes: Iterable[AlertChange], at_ns: int) -> list[AlertChange]:
        applied = []
        with transaction(self.conn):
            for change in changes:
                if _apply(self.conn, change, at_ns):
                    self.conn.executemany(
                        "INSERT INTO alerts (node, event, body, created_at) VALUES (?, ?, ?, ?)",
                        [(change.node, event, body, at_ns) for event, body in change.alerts],
                    )
                    applied.append(change)
        return applied

    def pending_alerts(self, limit: int = 100) -> list[PendingAlert]:
        return [PendingAlert(*row) for row in self.conn.execute(PENDING, (limit,))]

    def count_pending_alerts(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM alerts WHERE delivered_at IS NULL").fetchone()[0]

    def alert_delivered(self, alert_id: int, at_ns: int) -> None:
        self.conn.execute(
            "UPDATE alerts SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL", (at_ns, alert_id)
        )

    def alert_failed(self, alert_id: int, error: str, at_ns: int) -> None:
        self.conn.execute(
            "UPDATE alerts SET attempts = attempts + 1, last_error = ? WHERE id = ? AND delivered_at IS NULL",
            (error, alert_id),
        )

    def prune_alerts(self, before_ns: int) -> int:
        return self.conn.execute("DELETE FROM alerts WHERE delivered_at < ?", (before_ns,)).rowcount


def _apply(conn: sqlite3.Connection, change: AlertChange, at_ns: int) -> bool:
    """Change one node's row if it still holds ``change.before``; whether it did."""
    before, after = change.before, change.after
    if before is None and after is None:
        return False
    if before is None:
        return conn.execute(
            "INSERT INTO alert_states (node, health, battery, changed_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (node) DO NOTHING", (change.node, after.health, after.battery, at_ns),
        ).rowcount == 1
    same = "node = ? AND health IS ? AND battery IS ?"  # IS: NULL compares as a value
    if after is None:
        return conn.execute(
            f"DELETE FROM alert_states WHERE {same}", (change.node, before.health, before.battery)
        ).rowcount == 1
    return conn.execute(
        f"UPDATE alert_states SET health = ?, battery = ?, changed_at = ? WHERE {same}",
        (after.health, after.battery, at_ns, change.node, before.health, before.battery),
    ).rowcount == 1
