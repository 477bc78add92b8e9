"""Meta: small named values in one table, and the one upsert every room writes them with."""
from __future__ import annotations

from typing import Optional

import psycopg

from .connection import Connections


def get_meta(conn: psycopg.Connection, key: str) -> Optional[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else row[0]


def put_meta(conn: psycopg.Connection, key: str, value: Optional[str], *, never_backwards: bool = False) -> None:
    """Set ``key`` to ``value`` (None: delete it). ``never_backwards``: the value is an integer that only
    grows (the forward cursor, the horizon); a smaller one leaves the stored one as it is."""
    if value is None:
        conn.execute("DELETE FROM meta WHERE key = %s", (key,))
        return
    keep = "GREATEST(meta.value::numeric, excluded.value::numeric)::text" if never_backwards else "excluded.value"
    conn.execute(
        f"INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = {keep}", (key, value)
    )


class MetaRoom(Connections):
    def meta(self, key: str) -> Optional[str]:
        with self._connection() as conn:
            return get_meta(conn, key)

    def set_meta(self, key: str, value: Optional[str]) -> None:
        with self._connection() as conn:
            put_meta(conn, key, value)

    def setdefault_meta(self, key: str, value: str) -> str:
        with self._connection() as conn:
            # A concurrent insert of the same key makes this one wait for its commit, then do nothing;
            # the next statement (READ COMMITTED) sees the winner's value.
            conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value))
            return get_meta(conn, key)
