"""Moving house: ``tswarm migrate --to URL`` copies the journal the command is configured with into
an empty place of another engine, whole, and checks the copy.

From SQLite (the data dir) to PostgreSQL (``--to postgres://...``), or back (``DATABASE_URL`` set,
``--to`` a data dir without a journal), or from one PostgreSQL database to another. Everything moves
as stored: node ids, names and password hashes (nodes keep their passwords: no reflash), the created
mark, halts, intervals and display rights (a master node still reads the swarm), removed nodes,
readings with their ids, timestamps, telemetry and keys (so the forward cursor keeps meaning
"InfluxDB has everything up to here"), rejected readings, every meta value
(the cursor, the forwarder's last error, halt-all, the retention horizon), and the over-the-air
updates: the firmware bundles kept, and each node's firmware state (what it runs, what is staged for
it, when it updated or rolled back), so an update staged before the move is offered after it. Into
PostgreSQL, the alerts' state and outbox go too (an alert not yet delivered is delivered after the
move, and a node judged before it is not alerted again), and so does the read token the service kept
in the data dir, as a meta value of the copy.

The source is read in one snapshot (its data dir held, so no ``tswarm serve`` starts on it
meanwhile); the target is written in one transaction that commits only when its counts match the
source's (:meth:`tswarm.storage.Storage.load`), so a failure leaves it as empty as it was; so does a
Ctrl-C or a kill midway (the server rolls back what the lost session had not committed), and the
same command runs again. After the commit the copy is opened as the service would open it and
checked once more.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from .datadir import DataDirInUse, hold_data_dir
from .settings import Config, DatabaseUrl
from .storage import DB_FILENAME, FORWARD_CURSOR, HALT_ALL, PRUNED_BEFORE, READ_TOKEN, Storage, StorageError, open_storage
from .storage.interface import JournalCounts, JournalDump
from .tokens import TokenFileError, keep_read_token, load_read_token, token_path

BATCH = 10_000  # readings per round trip, read and written


class MigrateError(Exception):
    """What is wrong with the move, in one line; nothing was written."""


@dataclass(frozen=True)
class Target:
    """Where the journal goes: a PostgreSQL URL or a data dir."""

    address: str
    postgres: bool

    @property
    def shown(self) -> str:
        """The target as it may be printed (a URL's password as ``***``)."""
        if self.postgres:
            from .storage.postgres import redact

            return redact(self.address)
        return str(Path(self.address) / DB_FILENAME)


@dataclass(frozen=True)
class Moved:
    """What a move copied (the copy's counts, equal to the source's)."""

    source: str
    target: str
    counts: JournalCounts
    read_token: str = ""  # where the kept read token went (the status page's links keep working), if there was one


def target_of(to: str, source_is_postgres: bool) -> Target:
    """``--to`` as a :class:`Target`: a ``postgres://`` or ``postgresql://`` URL, or, when the source is
    PostgreSQL, a data dir. :class:`MigrateError` otherwise (the text is not quoted: it may hold a password)."""
    to = to.strip()
    if "://" in to:
        fault = DatabaseUrl.fault(to)
        if fault == DatabaseUrl.OTHER_SCHEME:
            raise MigrateError(
                f"--to must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db,"
                f" not a {urlsplit(to).scheme or '?'}:// one"
            )
        if fault:
            raise MigrateError(
                f"--to must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db;"
                f" the one given {fault} (not shown: it may hold a password)"
            )
        return Target(to, postgres=True)
    if not source_is_postgres:
        raise MigrateError(
            "--to must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db"
            " (a data dir is a target only on the way back, with DATABASE_URL or TSWARM_DATABASE_URL set)"
        )
    if not to:
        raise MigrateError("--to must be a data dir (or a postgres:// URL)")
    return Target(to, postgres=False)


def source_name(config: Config) -> str:
    if config.database_url:
        from .storage.postgres import redact

        return redact(config.database_url)
    return str(config.data_dir / DB_FILENAME)


def migrate(
    config: Config,
    source: Storage,
    target: Target,
    *,
    batch: int = BATCH,
    on_start: Optional[Callable[[JournalCounts], None]] = None,
    on_rows: Optional[Callable[[int], None]] = None,
) -> Moved:
    """Copy ``source`` (the journal ``config`` names, opened) into ``target``, check it, say what moved.

    ``on_start(counts)`` once the source is counted (a progress bar's total), ``on_rows(n)`` after each
    ``batch`` of readings. :class:`MigrateError`: nothing was written to the target."""
    engine = _engine(target)
    try:
        with contextlib.ExitStack() as held:
            if not config.database_url:
                try:
                    held.enter_context(hold_data_dir(config.data_dir))
                except DataDirInUse as exc:
                    raise MigrateError(f"{exc}; readings it takes meanwhile would be left behind") from None
            token = _read_token_to_carry(config, target)
            try:
                with source.dump(batch) as dump:
                    try:
                        dump = _with_read_token(dump, token)
                        if on_start is not None:
                            on_start(dump.counts)
                        counts = engine.load(target.address, dump, on_rows)
                    finally:  # a load stopped midway: its streams end here, while their snapshot is open
                        for rows in (dump.readings, dump.rejected):
                            getattr(rows, "close", lambda: None)()
            except StorageError as exc:
                raise MigrateError(f"{exc}; nothing was copied, {target.shown} is as it was") from None
    except KeyboardInterrupt:  # Ctrl-C: the transaction was rolled back (or the new file removed)
        raise MigrateError(
            f"interrupted: nothing was copied, {target.shown} is as it was; run the same command again"
        ) from None
    try:
        _check_copy(target, counts)
        read_token = _move_read_token(config, target, counts, token)
    except KeyboardInterrupt:
        raise MigrateError(
            f"interrupted after the copy was committed: {target.shown} holds the whole journal"
            " (a second tswarm migrate refuses it); start the service on it"
        ) from None
    return Moved(source_name(config), target.shown, counts, read_token)


def _read_token_to_carry(config: Config, target: Target) -> Optional[str]:
    """The read token the service kept in the data dir (service/tokens.py), when it goes into the
    database: as a meta value of the copy, in the copy's one transaction (a move stopped after its
    commit must not leave the token behind, since a second run refuses the database)."""
    if not (target.postgres and not config.database_url):
        return None
    try:
        return load_read_token(config.data_dir)
    except TokenFileError as exc:
        raise MigrateError(f"cannot read the read token: {exc}; nothing was copied, {target.shown} is as it was") from None


def _with_read_token(dump: JournalDump, token: Optional[str]) -> JournalDump:
    """``dump`` with the data dir's read token as a meta value (unless the journal keeps one already)."""
    if token is None or dump.counts.get(READ_TOKEN) is not None:
        return dump
    meta = tuple(sorted(dump.counts.meta + ((READ_TOKEN, token),)))
    return dataclasses.replace(dump, counts=dataclasses.replace(dump.counts, meta=meta))


def _move_read_token(config: Config, target: Target, counts: JournalCounts, carried: Optional[str]) -> str:
    """The read token the service kept without ``TSWARM_READ_TOKEN`` (a file in the data dir on SQLite,
    a meta value on PostgreSQL, service/tokens.py) goes along, so the status page's links and cookies
    keep working; where it went, for the summary ("" when there was none). Into PostgreSQL it went
    with the copy (:func:`_read_token_to_carry`); on the way back it is written into the data dir."""
    if target.postgres:
        return f"the database (meta {READ_TOKEN!r})" if carried is not None or counts.get(READ_TOKEN) else ""
    try:
        if counts.get(READ_TOKEN):
            keep_read_token(Path(target.address), counts.get(READ_TOKEN))
            return str(token_path(Path(target.address)))
    except TokenFileError as exc:
        raise MigrateError(f"the journal was copied and checked, but not the read token: {exc}") from None
    return ""


def _engine(target: Target) -> type[Storage]:
    if target.postgres:
        from .storage.postgres import PostgresStorage

        return PostgresStorage
    from .storage.sqlite import SqliteStorage

    return SqliteStorage


def _check_copy(target: Target, counts: JournalCounts) -> None:
    """Open the committed copy as the service will, and ask it what it holds."""
    data_dir, url = ("", target.address) if target.postgres else (target.address, "")
    with open_storage(data_dir, url, existing=True) as copy:
        seen = {
            "nodes": len(copy.node_names()),
            "readings": copy.count_readings(),
            "last reading id": copy.last_reading_id(),
            "rejected": copy.count_rejected(),
            "forward cursor": copy.forward_cursor(),
            "pruned before": copy.pruned_before(),
            "halt-all": copy.halted_all(),
        }
    pruned = counts.get(PRUNED_BEFORE)
    wanted = {
        "nodes": counts.nodes,
        "readings": counts.readings,
        "last reading id": counts.last_reading_id,
        "rejected": counts.rejected,
        "forward cursor": int(counts.get(FORWARD_CURSOR) or 0),
        "pruned before": None if pruned is None else int(pruned),
        "halt-all": counts.get(HALT_ALL) == "1",
    }
    wrong = [f"{key} {seen[key]} instead of {wanted[key]}" for key in wanted if seen[key] != wanted[key]]
    if wrong:
        raise MigrateError(f"the copy in {target.shown} reads back wrong ({', '.join(wrong)}); drop it and run again")


def summary(moved: Moved) -> list[str]:
    """What ``tswarm migrate`` prints: what was copied, and what stays behind."""
    from .timefmt import rfc3339

    c = moved.counts
    cursor = int(c.get(FORWARD_CURSOR) or 0)
    pruned = c.get(PRUNED_BEFORE)
    ids = f", ids {c.first_reading_id} to {c.last_reading_id}, the newest at {rfc3339(c.newest_ts)}" if c.readings else ""
    lines = [
        f"copied {moved.source} to {moved.target}, and checked it:",
        f"  nodes      {c.nodes} ({c.registered} registered, {c.halted} halted; halt-all {'on' if c.get(HALT_ALL) == '1' else 'off'})"
        "; passwords as they were" + (f"; {c.display} may read the swarm (display right)" if c.display else ""),
        f"  readings   {c.readings}{ids}",
        f"  rejected   {c.rejected}",
        f"  forwarded  up to reading {cursor} (the forward cursor)" + ("; the last forward error too" if c.get("forward_last_error") else ""),
        f"  retention  {'readings before ' + rfc3339(int(pruned)) + ' were pruned' if pruned else 'nothing pruned'}",
        f"  firmware   {c.bundles} bundle(s), {c.bundle_files} file(s); what each node runs and has staged",
    ]
    if moved.read_token:
        lines.append(f"  read token the status page's, now kept in {moved.read_token}: its links keep working")
    return lines
