"""What the service, the CLI, the forwarder and the readers ask of storage: one class, by room.

:class:`Storage` names every operation (as huey's ``BaseStorage`` does); each engine is a subclass
that implements them in its own idiom (SQLite: :class:`tswarm.storage.sqlite.SqliteStorage`).
Nothing outside the storage package talks to a database. The rooms:

- **registry**: nodes, their passwords, halts, intervals and display rights (and a snapshot of
  nodes' records that the event loop serves without a storage read: service/storage/snapshot.py);
- **readings writer**: the group-committing :class:`Writer` behind every 202, the timestamps (a
  kept reading's ``age``), and the exactly-once key ``(boot, seq)`` of a reading sent again;
- **outbox**: what waits for InfluxDB (``store=influxdb``): the forward cursor, the readings after
  it, the readings InfluxDB refused for good, the backlog;
- **reads**: readings by node and time range, counts, pages, one consistent snapshot;
- **retention**: pruning old readings and the horizon below which the journal is incomplete;
- **meta**: small named values (the cursor, halt-all, the forwarder's last error, the horizon);
- **the singleton lock**: which process, of every one on this journal, forwards and prunes;
- **firmware**: bundles of board files kept by version, the one staged for each node, and what each
  node last reported running (over-the-air updates, service/bundles.py);
- **alerts**: what the alerts (service/alerts.py) last judged of each node, and the outbox of alerts
  waiting for the webhook (a change of state and its alerts commit together);
- **moving house**: the whole journal out of one engine (:meth:`Storage.dump`) and into an empty
  place of another (:meth:`Storage.load`), for ``tswarm migrate``.

A storage object serves one thread at a time. No aiohttp here.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Iterator, NamedTuple, Optional, Union

if TYPE_CHECKING:
    from .snapshot import RegistrySnapshot

# -- errors -----------------------------------------------------------------------------------


class StorageError(Exception):
    """Base of the storage's own errors."""


class NodeExists(StorageError):
    """A registered node has that name already."""


class NodeNotFound(StorageError):
    """No registered node has that name (never registered, or removed)."""


class StorageUnusable(StorageError):
    """The data dir or its journal cannot be used at all (a file where the folder should be, no write
    permission, a ``tswarm.db`` that is not SQLite, a schema newer than this tswarm). The message
    names the path and what to do; the CLI prints it as is."""


class StorageUnavailable(StorageError):
    """The journal cannot take a reading now (disk full, I/O error, overloaded, shutting down).
    Nothing was stored."""


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeAuth:
    """What a request needs to know about its node, read fresh on every request."""

    id: int
    name: str
    password_hash: str
    created: bool
    halted: bool  # this node, or all nodes
    interval_s: int = 300  # how often it should wake: the "sleep" of a 202/423
    fw_running: Optional[str] = None  # the firmware version it last reported (X-Tswarm-Firmware)
    fw_staged: Optional[str] = None  # the bundle version staged for it
    fw_rolled_back: Optional[str] = None  # the version it last reported rolling back from
    display: bool = False  # it may read the swarm's summary (GET /api/nodes/{name}/swarm: a master node)


@dataclass(frozen=True)
class FirmwareState:
    """A node's over-the-air update state (every ``*_at`` ns since the epoch, None: never).

    Written only when something changes (:meth:`Storage.report_firmware` is called for a request
    whose version or rollback differs from what is stored), so a node that reports the same version
    on every wake costs no write. service/bundles.py turns it into ``current``/``pending``/...
    """

    running: Optional[str] = None  # the version it last reported
    reported_at: Optional[int] = None  # when it first reported ``running``
    staged: Optional[str] = None  # the bundle version staged for it
    staged_at: Optional[int] = None
    updated_at: Optional[int] = None  # when it first reported running ``staged`` (cleared by staging)
    rolled_back: Optional[str] = None  # the version it last reported rolling back from (cleared by staging)
    rolled_back_at: Optional[int] = None


@dataclass(frozen=True)
class BundleFile:
    """One file of a firmware bundle, as a node's update offer lists it."""

    name: str
    size: int
    sha256: str  # hex


class ReadingExtra(NamedTuple):
    """Optional telemetry of one reading (None: not sent): what the board measured besides the reading."""

    vbat: Optional[float] = None  # supply/battery voltage, volts
    rssi: Optional[int] = None  # Wi-Fi RSSI, dBm
    awake_ms: Optional[int] = None  # how long the board's previous wake took, ms
    lost: Optional[int] = None  # kept readings the board had to drop since its last delivered one


NO_EXTRA = ReadingExtra()
# The column names of readings, the CSV columns (in this order, after humidity) and InfluxDB's field names.
EXTRA_FIELDS = ReadingExtra._fields
# ``outbox_rows(..., lean=True)``'s sixth column, in either engine's SQL: 1 where a reading has any telemetry, else NULL
_ANY_EXTRA_COLUMN = ", CASE WHEN " + " OR ".join(f"{column} IS NOT NULL" for column in EXTRA_FIELDS) + " THEN 1 END"
_EXTRA_COLUMNS = "".join(f", {column}" for column in EXTRA_FIELDS)
_SIXTH = itemgetter(5)


def outbox_select(select: Callable[[str], list[tuple]], with_extra: bool, lean: bool) -> list[tuple]:
    """:meth:`Storage.outbox_rows`'s rows, whatever the engine: ``select(columns)`` runs the engine's
    query with ``columns`` after humidity (SQL, "" or starting with a comma). Lean: six columns, and
    all nine again only when a row has telemetry (the check runs in C: ``map`` over ``itemgetter``)."""
    if with_extra and lean:
        rows = select(_ANY_EXTRA_COLUMN)
        if not any(map(_SIXTH, rows)):
            return rows
    return select(_EXTRA_COLUMNS if with_extra else "")


class Duplicate(int):
    """The timestamp :meth:`Writer.append` returns for a reading whose key ``(boot, seq)`` its node
    had stored already: nothing was stored, and this is the stored reading's time (an ``int`` like
    every other; ``isinstance(ts, Duplicate)`` tells the protocol to say ``"duplicate": true``)."""

    duplicate = True


@dataclass(frozen=True)
class NodeStatus:
    """A registered node and its newest reading by time (``last_*`` None: it never sent one, or its
    newest reading came without that telemetry)."""

    name: str
    registered_at: int
    created_at: Optional[int]
    halted: bool  # this node's own halt (halt-all is :meth:`Storage.halted_all`)
    interval_s: int
    last_ts: Optional[int]
    last_temperature: Optional[float]
    last_humidity: Optional[float]
    firmware: FirmwareState = FirmwareState()
    last_vbat: Optional[float] = None
    last_rssi: Optional[int] = None
    last_awake_ms: Optional[int] = None
    display: bool = False  # it may read the swarm's summary (a master node: ``tswarm node display``)


class OutboxReading(NamedTuple):
    """One reading as the forwarder sends it: ``id`` is its place in commit order."""

    id: int
    node: str
    ts: int
    temperature: float
    humidity: float


@dataclass(frozen=True)
class AlertState:
    """What the alerts (service/alerts.py) last judged of one node (None: not judged yet)."""

    health: Optional[str] = None  # one of service/health.py's HEALTH_STATES
    battery: Optional[str] = None  # "low" or "ok"


@dataclass(frozen=True)
class AlertChange:
    """A change of one node's :class:`AlertState`, and the alerts it causes (queued in its transaction).

    ``before`` is the state :meth:`Storage.alert_states` gave (None: no state kept for the node);
    the change applies only while that is still what is stored, so two judges at once (leaders
    overlapping for a moment) queue each alert once. ``after`` None forgets the node's state."""

    node: str
    before: Optional[AlertState]
    after: Optional[AlertState]
    alerts: tuple[tuple[str, str], ...] = ()  # (event, JSON body), in the order they are delivered


class PendingAlert(NamedTuple):
    """An alert the webhook has not acknowledged yet: ``id`` is its place in the order of queueing."""

    id: int
    node: str
    event: str
    body: str  # the JSON body, as queued (sent as is, every attempt)
    created_at: int  # ns
    attempts: int  # failed attempts so far


class OutboxReadingExtra(NamedTuple):
    """An :class:`OutboxReading` with its telemetry (``outbox_readings(..., with_extra=True)``)."""

    id: int
    node: str
    ts: int
    temperature: float
    humidity: float
    vbat: Optional[float] = None
    rssi: Optional[int] = None
    awake_ms: Optional[int] = None
    lost: Optional[int] = None


OutboxRow = tuple  # (id, node_id, ts, temperature, humidity[, vbat, rssi, awake_ms, lost]): with the node's id

# -- meta keys --------------------------------------------------------------------------------

FORWARD_CURSOR = "forward_cursor"          # id of the last reading InfluxDB acknowledged
FORWARD_LAST_ERROR = "forward_last_error"  # JSON {"at": ns, "message": ...} while writes fail
HALT_ALL = "halt_all"                      # "1": every node is halted
PRUNED_BEFORE = "pruned_before"            # ns; below it the journal is no longer complete (see prune_readings)
READ_TOKEN = "read_token"                  # PostgreSQL: the kept read token every instance shares (service/tokens.py)


# -- moving house: the whole journal, table by table --------------------------------------------

# The columns of a dump's rows, the same on every engine: ids, timestamps and password hashes as stored.
# A node's firmware state, in the order of FirmwareState's fields (NULL: never).
FIRMWARE_COLUMNS = ("fw_running", "fw_reported_at", "fw_staged", "fw_staged_at", "fw_updated_at",
                    "fw_rolled_back", "fw_rolled_back_at")
NODE_COLUMNS = ("id", "name", "password_hash", "registered_at", "created_at", "removed_at", "halted", "interval_s",
                *FIRMWARE_COLUMNS, "display")  # halted and display: bools
BUNDLE_COLUMNS = ("version", "created_at")
BUNDLE_FILE_COLUMNS = ("version", "name", "sha256", "content")  # content: bytes
READING_COLUMNS = ("id", "node_id", "ts", "temperature", "humidity", *EXTRA_FIELDS, "boot", "seq")
REJECTED_COLUMNS = ("reading_id", "node", "ts", "temperature", "humidity", "reason", "rejected_at")
ALERT_STATE_COLUMNS = ("node", "health", "battery", "changed_at")  # the alerts room: each node's judged state
ALERT_COLUMNS = ("id", "node", "event", "body", "created_at", "attempts", "last_error", "delivered_at")  # its outbox


@dataclass(frozen=True)
class JournalCounts:
    """What a copy of a journal must have the same of as its source (compared before the copy commits)."""

    nodes: int  # every node row, removed ones too (a node's id keeps its name for good)
    registered: int  # of which registered now
    halted: int  # nodes halted one by one (halt-all is in ``meta``)
    readings: int
    first_reading_id: int  # 0: no reading
    last_reading_id: int
    newest_ts: int  # 0: no reading
    rejected: int
    meta: tuple[tuple[str, str], ...]  # every meta row, by key: the forward cursor, halt-all, the horizon, ...
    bundles: int = 0  # firmware bundles kept
    bundle_files: int = 0  # their files
    display: int = 0  # nodes with the display right

    def get(self, key: str) -> Optional[str]:
        return dict(self.meta).get(key)


@dataclass
class JournalDump:
    """The whole journal as of one snapshot, as :meth:`Storage.dump` gives it: rows as tuples in the
    order of the ``*_COLUMNS`` above (``halted`` and ``display`` bools). ``nodes`` is small and in memory;
    ``rejected`` and ``readings`` come in lists of rows (by id), once, while the dump is open."""

    counts: JournalCounts
    nodes: list[tuple]
    rejected: Iterable[list[tuple]]
    readings: Iterable[list[tuple]]
    bundles: list[tuple] = ()  # BUNDLE_COLUMNS rows
    bundle_files: list[tuple] = ()  # BUNDLE_FILE_COLUMNS rows (a few hundred KB at most: in memory)
    alert_states: list[tuple] = ()  # ALERT_STATE_COLUMNS rows: a move keeps what each node was judged
    alerts: list[tuple] = ()  # ALERT_COLUMNS rows, delivered or not: an alert not yet delivered is not lost

    @property
    def meta(self) -> dict[str, str]:
        return dict(self.counts.meta)


# -- the writer -------------------------------------------------------------------------------


class Writer(abc.ABC):
    """Group commit: one writer, many waiting requests per transaction (made by :meth:`Storage.writer`).

    ``await writer.append(...)`` returns the reading's timestamp once its transaction is committed
    and synced, or raises :class:`StorageUnavailable` when nothing was stored. Timestamps are the
    server's clock in ns, unique across all nodes and strictly increasing in commit order, even when
    the clock steps back, across restarts, across several writers and past pruned readings.

    Two exceptions to "now", both in :meth:`append`: a kept reading (``age_s > 0``) is given the
    time ``now - round(age_s * 1e9)``, moved forward 1 ns at a time until no reading of any node
    has it (so still unique across nodes; not above the live ones); and a reading with a ``key``
    its node has stored already (committed, or earlier in the same batch) is not stored again: its
    answer is the stored reading's time, as a :class:`Duplicate`. Ids grow by one per stored
    reading in commit order, aged or not (the forwarder's cursor misses nothing).
    """

    on_commit: Optional[Callable[[int, float], None]] = None  # callback(batch_size, seconds), for metrics
    commit_listeners: list[Callable[[], None]]  # called after every commit (the forwarder's wake-up)

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect; :meth:`append` works from now on."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit what waits, then stop. Calling it again does nothing."""

    @property
    @abc.abstractmethod
    def queued(self) -> int:
        """Readings waiting for their transaction."""

    @abc.abstractmethod
    async def append(
        self, node_id: int, temperature: float, humidity: float, *, create: bool = False,
        extra: ReadingExtra = NO_EXTRA, age_s: float = 0.0, key: Optional[tuple[str, int]] = None,
    ) -> int:
        """Store one reading of node ``node_id`` (``create``: its first POST, which marks the node
        created in the same transaction) with its telemetry ``extra``, taken ``age_s`` seconds ago
        (0: now), under its exactly-once ``key=(boot, seq)`` (None: none); its timestamp once
        durable, or the stored one's (a :class:`Duplicate`) when ``key`` was stored before."""

    @abc.abstractmethod
    def unavailable(self, exc: StorageUnavailable) -> None:
        """A storage call failed with ``exc`` (a batch of the writer's, or a route's lookup or read):
        the first of an outage is logged, the others counted, until a commit or a probe succeeds."""

    @abc.abstractmethod
    async def away(self) -> Optional[StorageUnavailable]:
        """During an outage, on an engine that can ask its database cheaply (PostgreSQL): why it is
        still away, or None once it answers again. None at once when no outage is known or the
        engine cannot tell (SQLite: a call may as well try)."""

    @abc.abstractmethod
    def refuse_if_away(self) -> None:
        """From any thread: raise the outage's :class:`StorageUnavailable` while :meth:`away` would
        not be None without asking, so a call queued before the outage was noticed need not wait
        for a connection."""


# -- the singleton lock -----------------------------------------------------------------------


class SingletonLock(abc.ABC):
    """The right to run what must run once across every process on one journal: the forwarder and the
    pruner (made by :meth:`Storage.singleton_lock`; service/leader.py asks for it and runs them).

    Held by at most one object at a time, and released by the engine itself when the process holding
    it dies, however it dies: nobody cleans up after a crash. Blocking calls, one thread at a time."""

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it, without waiting; True when this object holds it now.
        :class:`StorageUnavailable` when the database cannot be asked (then it is not held)."""

    @abc.abstractmethod
    def held(self) -> bool:
        """This object still holds the lock (asks the database: False once its session is gone, and
        then for good, until :meth:`try_acquire` takes it again)."""

    @abc.abstractmethod
    def release(self) -> None:
        """Let the lock go (another process may take it at once) and close what it held it with.
        Calling it again, or without holding the lock, does nothing."""


# -- the storage ------------------------------------------------------------------------------


class Storage(abc.ABC):
    """Synchronous access to the journal for one thread, room by room.

    ``engine`` (``"sqlite"`` or ``"postgresql"``) and ``where`` (the file, or the URL with its password
    as ``***``) say which journal it is, for ``/healthz`` and messages."""

    engine: str = ""  # each engine names itself
    where: str  # set by each engine's constructor

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- registry: nodes, passwords, halts, intervals -------------------------------------------

    @abc.abstractmethod
    def add_node(self, name: str, password_hash: str) -> None:
        """Register a node's credentials (:class:`NodeExists` if registered). A removed node's name may
        be added again: it starts afresh (not created, not halted), its old readings stay."""

    @abc.abstractmethod
    def set_password(self, name: str, password_hash: str) -> None:
        """Replace a registered node's password hash (:class:`NodeNotFound` otherwise)."""

    @abc.abstractmethod
    def remove_node(self, name: str) -> None:
        """Revoke a node's credentials and hide it; its readings stay in the history
        (:class:`NodeNotFound` if not registered)."""

    @abc.abstractmethod
    def is_registered(self, name: str) -> bool:
        """The node is registered now (removed nodes are not)."""

    @abc.abstractmethod
    def ever_registered(self, name: str) -> bool:
        """The node is registered now or was before (a removed node's readings stay in the history)."""

    @abc.abstractmethod
    def node_auth(self, name: str, *, fresh: bool = False) -> Optional[NodeAuth]:
        """What authenticating a request of ``name`` needs, or None when it is not registered.
        ``fresh``: read from the database itself, past any cache of the engine's (PostgreSQL's
        registry cache), for a refusal that must not rest on a change not yet announced."""

    def registry_snapshot(self) -> "RegistrySnapshot":
        """A snapshot of nodes' records for the event loop (service/storage/snapshot.py), exact at
        every lookup: SQLite's checks the journal's ``registry_version``, PostgreSQL's serves the
        process's cache of records. Opened once per storage pool; this default keeps nothing."""
        from .snapshot import RegistrySnapshot

        return RegistrySnapshot()

    @abc.abstractmethod
    def mark_created(self, name: str, at_ns: int) -> None:
        """Mark a registered node created (its first POST) at ``at_ns``, outside the writer, which
        does this itself with ``append(create=True)``: for imports and fixtures."""

    @abc.abstractmethod
    def set_halt(self, name: Optional[str], halted: bool) -> None:
        """Halt or resume one node, or (``name=None``) all of them (:class:`NodeNotFound` for a
        name not registered)."""

    @abc.abstractmethod
    def halted_all(self) -> bool:
        """Every node is halted (``set_halt(None, True)``)."""

    @abc.abstractmethod
    def set_interval(self, name: str, seconds: int) -> None:
        """How often node ``name`` is expected to wake (seconds); its health is judged against it."""

    @abc.abstractmethod
    def set_display(self, name: str, on: bool) -> None:
        """Give node ``name`` the display right (``on``), or take it away: with it, its own credentials
        read the swarm's summary (``GET /api/nodes/{name}/swarm``, service/swarm.py). :class:`NodeNotFound`
        for a name not registered."""

    @abc.abstractmethod
    def list_nodes(self) -> list[NodeStatus]:
        """Every registered node with its newest reading, by name, in one query."""

    def swarm_nodes(self) -> tuple[bool, list[NodeStatus]]:
        """``(halted_all(), list_nodes())`` as of one moment: what the swarm's summary needs
        (service/swarm.py, polled by every master node every interval). The engines answer it in one
        statement."""
        with self.snapshot():
            return self.halted_all(), self.list_nodes()

    @abc.abstractmethod
    def node_names(self) -> dict[int, str]:
        """Every node's id and name, removed nodes too (a node's id keeps its name for good). An id
        with no node reads ``#id``, as in :meth:`iter_readings`."""

    # -- readings writer: group commit and timestamps ----------------------------------------

    @abc.abstractmethod
    def writer(self, *, synchronous: str = "FULL", max_batch: int = 5000, max_queue: int = 50_000) -> Writer:
        """A new :class:`Writer` on its own connection (``start()`` it in the event loop).
        ``synchronous`` is SQLite's durability (FULL: synced before the 202)."""

    @abc.abstractmethod
    def add_readings(self, rows: Iterable[tuple]) -> None:
        """Store ``(node, ts_ns, temperature, humidity)`` rows (or ``(node, ts_ns, temperature,
        humidity, extra)`` with a :class:`ReadingExtra`) with the timestamps given, in one
        transaction and in the order given (imports, fixtures, benchmarks; the service stores
        through :meth:`writer`). Every node must be known (:meth:`ever_registered`), else
        :class:`NodeNotFound` and nothing is stored."""

    # -- outbox: forward cursor, readings after it, rejected readings, status ------------------

    @abc.abstractmethod
    def forward_cursor(self) -> int:
        """Id of the last reading InfluxDB acknowledged (0: none yet, so everything waits)."""

    def outbox_readings(
        self, after_id: int, limit: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None,
        *, with_extra: bool = False,
    ) -> list[OutboxReading]:
        """Up to ``limit`` readings with ``id > after_id`` in commit order (in time order per node,
        but for kept readings, which arrive with an older time), optionally only those with
        ``start_ns <= ts < stop_ns``: :meth:`outbox_rows` with names. ``with_extra``: each an
        :class:`OutboxReadingExtra` (the telemetry after humidity)."""
        names = self.node_names()
        rows = self.outbox_rows(after_id, limit, start_ns, stop_ns, with_extra=with_extra)
        if with_extra:
            return [OutboxReadingExtra(id_, names[node_id], *rest) for id_, node_id, *rest in rows]
        return [OutboxReading(id_, names[node_id], ts, t, h) for id_, node_id, ts, t, h in rows]

    @abc.abstractmethod
    def outbox_rows(
        self, after_id: int, limit: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None,
        *, with_extra: bool = False, lean: bool = False,
    ) -> list[OutboxRow]:
        """What :meth:`outbox_readings` returns, as stored: ``(id, node_id, ts, temperature, humidity)``
        (``with_extra``: then ``vbat, rssi, awake_ms, lost``), node ids in place of names (see
        :meth:`node_names`). The forwarder's fast path: no name string and no object per reading.

        ``lean`` (with ``with_extra``): when none of the rows has telemetry, each may come with one
        sixth item, None, in place of the four (one column read instead of four: readings of the
        seed's firmware, which sends none; the forwarder's CPU a point went from 2.39 to 2.17 µs,
        benchmarks/README.md); when any has, the nine items as ``with_extra`` gives them
        (:func:`outbox_select`)."""

    @abc.abstractmethod
    def count_outbox(self, after_id: int, start_ns: Optional[int] = None, stop_ns: Optional[int] = None) -> int:
        """How many readings :meth:`outbox_readings` would go through (the backlog, or a backfill's total)."""

    @abc.abstractmethod
    def last_reading_id(self) -> int:
        """The newest reading's id (0 when empty). Ids grow by one per reading and only readings
        already forwarded are ever deleted, so ``last_reading_id() - cursor`` is the backlog, in O(1)."""

    @abc.abstractmethod
    def first_id_from(self, start_ns: int) -> int:
        """An id to resume after so that no reading with ``ts >= start_ns`` is skipped (for backfills)."""

    @abc.abstractmethod
    def oldest_unforwarded_ts(self) -> Optional[int]:
        """The timestamp of the first reading after the cursor (None: nothing waits)."""

    @abc.abstractmethod
    def mark_forwarded(self, last_id: int, rejected: Iterable[tuple[OutboxReading, str]] = ()) -> None:
        """InfluxDB acknowledged every reading up to ``last_id``, except ``rejected`` (reading, reason):
        move the cursor (never backwards) and keep the rejected ones, in one transaction."""

    @abc.abstractmethod
    def record_rejected(self, rejected: Iterable[tuple[OutboxReading, str]]) -> None:
        """Keep readings InfluxDB refused during a backfill (the cursor is not the backfill's)."""

    @abc.abstractmethod
    def count_rejected(self) -> int:
        """How many readings InfluxDB refused for good."""

    @abc.abstractmethod
    def rejected_readings(self, limit: int = 100) -> list[tuple[OutboxReading, str, int]]:
        """The newest rejected readings: ``(reading, reason, rejected_at)``."""

    # -- reads: ranges, counts, pages, snapshot ---------------------------------------------------

    @abc.abstractmethod
    def count_readings(self) -> int:
        """How many readings the journal holds."""

    @abc.abstractmethod
    def iter_readings(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        batch: int = 5000,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: Optional[int] = None,
        with_id: bool = False,
        with_extra: bool = False,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> Iterator[list[tuple]]:
        """Yield lists of ``(ts_ns, node, temperature, humidity)`` in time order, ``batch`` rows at a time.

        ``start_ns`` is inclusive, ``stop_ns`` exclusive. ``after=(ts, id)`` resumes strictly after
        that row of the order ``(ts, id)``; ``limit`` stops after that many rows; ``with_extra``
        puts the four :data:`EXTRA_FIELDS` after humidity; ``with_id`` appends each row's id (after
        them), which is what a resume point is made of; ``ids=(lo, hi)`` keeps only the rows with
        ``lo < id <= hi`` (None: no bound on that side), so a reader can go over the readings that
        arrived since a pass (kept ones arrive with an older time). A node never registered yields
        nothing. Memory stays constant whatever the range.
        """

    def export_lines(
        self,
        fmt: str,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: Optional[int] = None,
        with_extra: bool = False,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> Optional[Iterator[tuple[str, int]]]:
        """An engine's own fast path for the export (optional): the lines that
        :func:`tswarm.export.export_chunks` would write for :meth:`iter_readings` with the same
        filters (``with_extra``: the lines with the telemetry), in ``fmt`` (``csv`` without its
        header, or ``ndjson``), byte for byte, as ``(text, rows)`` chunks of a few thousand lines.
        None (the default): the engine has none for these, the export formats the rows in Python.
        Memory stays constant whatever the range."""
        return None

    @abc.abstractmethod
    def count_readings_in(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> int:
        """How many rows :meth:`iter_readings` would yield with the same filters (for progress bars)."""

    @abc.abstractmethod
    def page_end(
        self,
        node: Optional[str] = None,
        start_ns: Optional[int] = None,
        stop_ns: Optional[int] = None,
        *,
        after: Optional[tuple[int, int]] = None,
        limit: int,
        ids: Optional[tuple[Optional[int], Optional[int]]] = None,
    ) -> Optional[tuple[int, int]]:
        """``(ts, id)`` of the last row of a page of ``limit`` rows when more rows follow it, else None.

        Asked before the page is streamed, inside the same :meth:`snapshot`, so a reader learns
        where to resume before the first byte.
        """

    @abc.abstractmethod
    def snapshot(self) -> ContextManager:
        """``with storage.snapshot():`` every read inside sees the journal as of its first read."""

    @abc.abstractmethod
    def reading_counts_since(self, since_ns: int) -> dict[str, int]:
        """How many readings each node sent from ``since_ns`` on (nodes without any are absent)."""

    @abc.abstractmethod
    def iter_kept_below(
        self, before_ns: int, node: Optional[str] = None, start_ns: Optional[int] = None
    ) -> Iterator[tuple]:
        """What the journal still holds below the horizon ``before_ns``, ordered by ``(ts, node)``:
        readings pruning had to keep (not yet forwarded) and readings InfluxDB refused for good,
        as ``(ts_ns, node, temperature, humidity)``, each once."""

    # -- retention: prune and horizon -------------------------------------------------------------

    @abc.abstractmethod
    def prune_readings(self, before_ns: int, up_to_id: Optional[int] = None, chunk: int = 10_000) -> int:
        """Delete readings older than ``before_ns`` (and, when given, with ``id <= up_to_id``: forwarded).

        Deletes ``chunk`` rows per transaction so the writer never waits long, and moves the horizon
        (:meth:`pruned_before`) past the newest reading deleted, in the same transaction. Returns
        how many went.
        """

    @abc.abstractmethod
    def pruned_before(self) -> Optional[int]:
        """The horizon: every reading with ``ts >= pruned_before()`` is still here; below it, pruning
        deleted readings (with ``store=influxdb``, forwarded ones: InfluxDB has them). None: nothing
        was ever pruned, the journal is complete."""

    # -- meta -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def meta(self, key: str) -> Optional[str]:
        """The value stored under ``key`` (None: none)."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: Optional[str]) -> None:
        """Set ``key``, or delete it when ``value`` is None."""

    @abc.abstractmethod
    def setdefault_meta(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there already; the stored value. Atomic: of
        several processes doing this at once, one value wins and all of them get it back."""

    # -- the singleton lock -----------------------------------------------------------------------

    @abc.abstractmethod
    def singleton_lock(self) -> SingletonLock:
        """A new :class:`SingletonLock` on this journal, not yet taken (it needs no connection of this
        storage object: it keeps its own for as long as it lives)."""

    # -- firmware: bundles, what is staged, what nodes report ---------------------------------------

    @abc.abstractmethod
    def add_bundle(self, version: str, files: Iterable[tuple[str, bytes]], at_ns: int) -> None:
        """Keep a bundle's files (name, content) under ``version`` (service/bundles.py's
        ``version_of`` of them, checked there). A version kept already is left as it is: a version
        is the hash of its content."""

    @abc.abstractmethod
    def bundle_files(self, version: str) -> Optional[list[BundleFile]]:
        """The files of bundle ``version`` by name (what an update offer lists), or None when no
        such bundle is kept."""

    @abc.abstractmethod
    def bundle_file(self, version: str, name: str) -> Optional[bytes]:
        """The content of one file of bundle ``version``, or None (no such bundle or file)."""

    @abc.abstractmethod
    def stage_bundle(self, version: Optional[str], names: Optional[Iterable[str]], at_ns: int) -> list[str]:
        """Stage kept bundle ``version`` for the registered nodes ``names`` (None: every registered
        node), in one transaction: ``staged``/``staged_at`` set, ``updated_at`` and the rollback
        mark cleared (a version that rolled back is offered again once staged again). ``version``
        None unstages (``staged_at`` cleared too). :class:`NodeNotFound` for a name not registered, :class:`StorageError` for a
        version not kept: nothing staged. The names staged, sorted."""

    @abc.abstractmethod
    def report_firmware(self, name: str, running: str, rolled_back_from: Optional[str], at_ns: int) -> None:
        """Node ``name`` reported running ``running`` (and, after a rollback, which version it gave up),
        at ``at_ns``: ``running`` and ``reported_at`` set when the version differs from the stored
        one; ``updated_at`` set when ``running`` is the staged version and ``updated_at`` is not set
        yet; ``rolled_back``/``rolled_back_at`` set when ``rolled_back_from`` is given and differs
        from the stored one. A node not registered: nothing happens."""

    @abc.abstractmethod
    def firmware_state(self, name: str) -> Optional[FirmwareState]:
        """Node ``name``'s update state, or None when it is not registered (:meth:`list_nodes` has
        every node's too)."""

    # -- alerts: each node's judged state, the outbox of alerts for the webhook ---------------------

    @abc.abstractmethod
    def alert_states(self) -> dict[str, AlertState]:
        """The state the alerts last judged of each node, by name (nodes never judged are absent)."""

    @abc.abstractmethod
    def record_alert_changes(self, changes: Iterable[AlertChange], at_ns: int) -> list[AlertChange]:
        """Apply ``changes`` and queue their alerts, in one transaction: each change whose ``before``
        is still the stored state (else it is skipped, and queues nothing). The changes applied."""

    @abc.abstractmethod
    def pending_alerts(self, limit: int = 100) -> list[PendingAlert]:
        """The oldest undelivered alert of each node (the next to deliver, in order per node), oldest first."""

    @abc.abstractmethod
    def count_pending_alerts(self) -> int:
        """How many alerts wait for the webhook."""

    @abc.abstractmethod
    def alert_delivered(self, alert_id: int, at_ns: int) -> None:
        """The webhook acknowledged alert ``alert_id`` (a 2xx): it is never sent again."""

    @abc.abstractmethod
    def alert_failed(self, alert_id: int, error: str, at_ns: int) -> None:
        """An attempt to deliver alert ``alert_id`` failed with ``error``: counted, kept for the next."""

    @abc.abstractmethod
    def prune_alerts(self, before_ns: int) -> int:
        """Forget alerts delivered before ``before_ns``; how many went (undelivered ones always stay)."""

    # -- moving house: the whole journal out, and into an empty place -------------------------------

    @abc.abstractmethod
    def dump(self, batch: int = 10_000) -> ContextManager[JournalDump]:
        """``with storage.dump() as d:`` the whole journal as of one snapshot (ids, timestamps, password
        hashes as stored, every meta value), for :meth:`load` into another engine. Readings come
        ``batch`` at a time: memory stays flat whatever the journal holds."""

    @classmethod
    @abc.abstractmethod
    def load(
        cls, target: Union[str, Path], dump: JournalDump, on_rows: Optional[Callable[[int], None]] = None
    ) -> JournalCounts:
        """Make ``target`` (this engine's place: a data dir, a database URL) hold a journal that is
        ``dump`` exactly, in one transaction; the copy's counts are compared with the dump's before it
        commits. A target that holds a journal already is refused, and any failure (a row that does
        not load, the connection lost, the counts differing) leaves it as it was:
        :class:`StorageUnusable` or :class:`StorageUnavailable`, nothing written. ``on_rows(n)`` after
        each list of readings. Returns the copy's counts."""
