"""Meta: small named values in one table, and the one upsert every room writes them with."""
from __future__ import annotations

import sqlite3
from typing import Optional

from .schema import transaction


def get_meta(conn: sqlite3.Connection, key: str) -> Optional[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def put_meta(conn: sqlite3.Connection, key: str, value: Optional[str], *, never_backwards: bool = False) -> None:
    """Set ``key`` to ``value`` (None: delete it). ``never_backwards``: the value is an integer that only
    grows (the forward cursor, the horizon); a smaller one leaves the stored one as it is."""
    if value is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        return
    keep = "MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))" if never_backwards else "excluded.value"
    conn.execute(f"INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = {keep}", (key, value))


class MetaRoom:
    conn: sqlite3.Connection

    def meta(self, key: str) -> Optional[str]:
        return get_meta(self.conn, key)

    def set_meta(self, key: str, value: Optional[str]) -> None:
        put_meta(self.conn, key, value)

    def setdefault_meta(self, key: str, value: str) -> str:
        with transaction(self.conn):  # BEGIN IMMEDIATE: the insert and the read under one write lock
            self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
            return get_meta(self.conn, key)
