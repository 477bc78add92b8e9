"""The registry's rules, written once, on top of the journal: registering a node (or giving it a
new password), whether a node is halted, staging an over-the-air update (:func:`stage_update`,
for ``tswarm firmware push``, ``tswarm node config --push`` and the admin API; :func:`stage_config`
for the admin API's config change), and the summary of
a node that both ``GET /api/nodes`` and ``tswarm node list --json`` print.

No aiohttp here: ``tswarm node ...``, ``tswarm flash``, the admin API and the readers call these.
Every function is blocking (scrypt, SQLite): the server runs them off its event loop.

The credential cache (service/auth.py) is per process, so it is not cleared here: the server does
that when its own admin API changes a password, and for a change made by another process (the CLI)
the cache needs nothing: it remembers a header together with the hash it verified against, so a new
hash never lets the old password in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Optional, Protocol

from . import auth, bundles
from .health import health
from .storage import BundleFile, NodeExists, NodeStatus, Storage
from .names import NODE_NAME_HELP, valid_node_name
from .settings import Config
from .timefmt import rfc3339

DAY_NS = 86_400 * 1_000_000_000


class Registration(Enum):
    """Which nodes :func:`register` may touch."""

    NEW = "new"  # a new node (or a removed one's name again); NodeExists if it is registered
    EXISTING = "existing"  # a new password for a registered node; NodeNotFound otherwise
    EITHER = "either"  # whichever it is (tswarm flash, tswarm node config)


class BadPassword(ValueError):
    """A given password no node can have; the message says why, and quotes none of it."""


@dataclass(frozen=True)
class Registered:
    name: str
    password: str  # as given, or generated: shown once in the node's svconf, never stored
    added: bool  # True: the node is new (or was removed); False: an existing node got this password


MAX_PASSWORD_BYTES = 1024  # the node sends it in every Authorization header, which a server takes up to ~8 KiB of


def password_or_generated(password: Optional[str]) -> str:
    """The password to use: ``password``, or a strong generated one when it is None."""
    if password is None:
        return auth.generate_password()
    if not password:
        raise BadPassword("must not be empty")  # left out, a strong one is generated
    if "\x00" in password:  # scrypt's HMAC pads a password with NULs: "pw" and "pw\x00" would be one
        raise BadPassword("must not contain a NUL character")
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: from a JSON "\ud800", or a command line byte not UTF-8
        raise BadPassword("must be UTF-8 text (it holds a code point or a byte that is not)") from None
    if len(encoded) > MAX_PASSWORD_BYTES:  # its node could never log in
        raise BadPassword(f"must be at most {MAX_PASSWORD_BYTES} bytes (the node sends it with every reading)")
    return password


def register(
    journal: Storage, config: Config, name: str, password: Optional[str] = None,
    which: Registration = Registration.NEW, *, generated: bool = False, display: Optional[bool] = None,
) -> Registered:
    """Register node ``name`` or give it a new password, as ``which`` allows; ``password`` None
    generates one. ``generated``: ``password`` is one :func:`password_or_generated` made already (the
    CLI and ``tswarm flash`` generate it first, to show it). ``display``: True or False gives the node
    the display right (it may read the swarm's summary: a master node) or takes it away, in the same
    call; None leaves it as it is (a new node has none).

    The hash is scrypt: with ``config.scrypt_n`` (:data:`~tswarm.auth.SCRYPT_N`, memory-hard) for a
    password a person chose, with :data:`~tswarm.auth.SCRYPT_N_GENERATED` (cheap: 144 random bits need
    no work factor) for a generated one. Raises ValueError for a bad name, BadPassword, and the
    journal's NodeExists / NodeNotFound."""
    if not valid_node_name(name):
        raise ValueError(f"{name!r}: node names are {NODE_NAME_HELP}")
    generated = generated or password is None
    password = password_or_generated(password)
    password_hash = auth.hash_password(password, n=auth.SCRYPT_N_GENERATED if generated else config.scrypt_n)
    if which is Registration.EXISTING:
        journal.set_password(name, password_hash)
        registered = Registered(name, password, added=False)
    else:
        try:
            journal.add_node(name, password_hash)
            registered = Registered(name, password, added=True)
        except NodeExists:
            if which is Registration.NEW:
                raise
            journal.set_password(name, password_hash)
            registered = Registered(name, password, added=False)
    if display is not None:
        journal.set_display(name, display)
    return registered


# -- halts -------------------------------------------------------------------------------------


class _Haltable(Protocol):
    halted: bool


def is_halted(node: Optional[_Haltable], config: Config, halted_all: bool = False) -> bool:
    """Whether a node gets 423: it is halted itself (``tswarm halt NAME``), or every node is
    (``tswarm halt``: ``halted_all``, the journal's; or ``TSWARM_HALT=1`` in ``config``).
    ``node`` None asks whether every node is halted.

    The journal's node record for a request (``node_auth``) already counts its halt of every node."""
    return bool(node is not None and node.halted) or halted_all or config.halt


# -- over-the-air updates -------------------------------------------------------------------------


class NoNodes(ValueError):
    """An update for every node, and none is registered."""


@dataclass(frozen=True)
class Staged:
    """What :func:`stage_update` did: the bundle's version and files, the nodes it is staged for now,
    and those of them whose pending update (another version, not yet running) it replaced."""

    version: str
    files: list[BundleFile]
    nodes: list[str]
    replaced: dict[str, str] = field(default_factory=dict)  # node -> the version that was pending


def stage_update(journal: Storage, files: Iterable[tuple[str, bytes]], names: Optional[Iterable[str]], at_ns: int) -> Staged:
    """Keep the bundle ``files`` (checked: service/bundles.py's BundleError) and stage it for the
    registered nodes ``names`` (None: every registered node), replacing whatever was staged for
    them; each node fetches it on its next wake. The journal's NodeNotFound for a name not
    registered, :class:`NoNodes` for every node of none: then nothing is staged."""
    files = bundles.check_files(files)
    version = bundles.version_of(files)
    states = {n.name: n.firmware for n in journal.list_nodes()}
    if names is None and not states:
        raise NoNodes("no node is registered; 'tswarm node add NAME' registers one")
    journal.add_bundle(version, files, at_ns)
    staged = journal.stage_bundle(version, None if names is None else list(names), at_ns)
    if names is None and not staged:  # every node removed (by another process) since they were listed
        raise NoNodes("no node is registered; 'tswarm node add NAME' registers one")
    replaced = {name: states[name].staged for name in staged if name in states
                and bundles.outcome(states[name])[0] == "pending" and states[name].staged != version}
    return Staged(version, bundles.manifest(files), staged, replaced)


def stage_config(journal: Storage, name: str, patch: dict, at_ns: int) -> Staged:
    """Stage the config change ``patch`` (checked: service/bundles.py's ``check_patch``, BundleError)
    for registered node ``name``, as ``tswarm node config NAME ... --push`` does: a ``netconf.sleep``
    also becomes the node's interval, the ``"sleep"`` of every 202/423, which is what a board sleeps
    by (its config's ``netconf.sleep`` counts only when no answer comes). The journal's NodeNotFound
    for a name not registered: then nothing is staged."""
    staged = stage_update(journal, bundles.config_patch(patch), [name], at_ns)
    sleep = patch.get("netconf", {}).get("sleep")
    if sleep is not None:  # an int in the interval's range: check_patch saw to it
        journal.set_interval(name, sleep)
    return staged


def firmware_report(journal: Storage) -> list[dict]:
    """Every registered node's update state, by name: ``tswarm firmware status --json`` and
    ``GET /api/admin/firmware``."""
    return [{"node": n.name, **bundles.firmware_json(n.firmware)} for n in journal.list_nodes()]


# -- the node summary ---------------------------------------------------------------------------


def battery_low(vbat: Optional[float], threshold_v: float) -> Optional[bool]:
    """Whether a battery at ``vbat`` volts is low: below ``threshold_v`` (``TSWARM_BATTERY_LOW_V``);
    None when the voltage is not known (the node's newest reading came without one)."""
    return None if vbat is None else vbat < threshold_v


def node_summary(node: NodeStatus, *, halted: bool, readings_24h: int, now_ns: int, battery_low_v: float) -> dict:
    """One node as ``GET /api/nodes`` and ``tswarm node list --json`` show it. The telemetry
    (``vbat``, ``rssi``, ``awake_ms``) is that of the newest reading, null when it came without."""
    return {
        "name": node.name,
        "health": health(now_ns, node.last_ts, node.interval_s, halted),
        "last_seen": rfc3339(node.last_ts) if node.last_ts is not None else None,
        "age_s": round((now_ns - node.last_ts) / 1e9, 3) if node.last_ts is not None else None,
        "temperature": node.last_temperature,
        "humidity": node.last_humidity,
        "vbat": node.last_vbat,
        "rssi": node.last_rssi,
        "awake_ms": node.last_awake_ms,
        "battery_low": battery_low(node.last_vbat, battery_low_v),
        "readings_24h": readings_24h,
        "interval_s": node.interval_s,
        "halted": halted,
        "created": node.created_at is not None,
        "display": node.display,  # it may read the swarm's summary (a master node: tswarm node display)
        "registered": rfc3339(node.registered_at),
        "firmware": bundles.firmware_json(node.firmware),
    }


def nodes_report(journal: Storage, config: Config, now_ns: int) -> dict:
    """Every node with its last reading and telemetry, last seen, readings in the last 24 h and health."""
    counts = journal.reading_counts_since(now_ns - DAY_NS)
    halted_all = is_halted(None, config, journal.halted_all())
    nodes = [
        node_summary(n, halted=is_halted(n, config, halted_all), readings_24h=counts.get(n.name, 0), now_ns=now_ns,
                     battery_low_v=config.battery_low_v)
        for n in journal.list_nodes()
    ]
    return {"time": rfc3339(now_ns), "halted_all": halted_all, "nodes": nodes}
