from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Iterable, Iterator

import pytest
from click.testing import CliRunner
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings

from tswarm import auth
from tswarm.app import create_app
from tswarm.cli import cli
from tswarm.storage import NodeStatus, Storage, open_storage
from tswarm.server import AccessLogger, AppRunner
from tswarm.settings import Config

from .servers import ENGINE, InfluxDB1, PostgreSQL, VictoriaMetrics

# No test here measures time with hypothesis: its per-example deadline (200 ms by default) only
# turns a slow moment of a loaded machine (CI, `make test` beside a build) into a failure.
settings.register_profile("tswarm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tswarm")

TEST_SCRYPT_N = 2**10  # fast hashes for unit tests; the real cost is measured in benchmarks/


# -- the storage engine: a parameter of the shared fixtures ------------------------------------------
#
# Every test runs on SQLite (the data dir) unless it is marked ``engines``: ``pytestmark =
# pytest.mark.engines`` runs each test of a module once per engine (ids ``[sqlite]``, ``[postgres]``);
# ``@pytest.mark.engines("sqlite")`` keeps one test (about SQLite's own file, lock or data dir: its
# docstring says why) on one engine. The ``engine`` fixture puts the test's engine in
# ``tests.servers.ENGINE``, and everything below follows it: ``test_config``, ``journal``,
# ``open_journal``, ``make_client``/``client``, ``run``, ``three_nodes``, ``fill_a_and_b``, and the
# child processes of tests/servers.py (``tswarm_env``, ``run_cli``, ``ServiceProcess``). On
# PostgreSQL each test gets a journal database of the session's cluster to itself, empty but for the
# schema (``postgres_journals``).

ENGINES = ("sqlite", "postgres")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "engines(*names): run the test once per storage engine (all of ENGINES, or those named)"
    )
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background of a shell (`( pytest & )`), SIGINT comes ignored, and every child
        # would inherit that: `tswarm forward`'s Ctrl-C tests need it delivered. A handler is not inherited.
        signal.signal(signal.SIGINT, signal.default_int_handler)


# -- in parallel: `make test` runs the suite on pytest-xdist workers (``-n``) --------------------------
#
# Each module is one unit of work: its tests run on one worker, in order, so a module- or session-scoped
# server (a module's history, the wheel's venv, a Chromium) starts once, not once per worker. Every
# module of tests/faults is the one unit ``LOAD_GROUP``: crash, flapping, disk-full, hostile-client and
# fuzz runs put the machine under load, so they run one after another on one worker, never two at once,
# while the other workers go on with the rest (a new heavy load test belongs in tests/faults). What the
# workers must not share is made safe where it is made: ``tests.servers.free_port`` (a claim per port,
# across processes), tmp_path (a base dir per worker), one PostgreSQL cluster / influxd / service per
# worker's session. (The grouping is by node id, in the scheduler, not by ``xdist_group`` marks: pytest
# 9.2 ignores the node id suffix through which xdist 3.8 applies those.)

LOAD_GROUP = "load"


def xdist_group_of(nodeid: str) -> str:
    """The unit of work of the test ``nodeid`` (relative to the checkout): ``LOAD_GROUP`` for tests/faults,
    else its module."""
    module = nodeid.split("::", 1)[0]
    return LOAD_GROUP if module.startswith("tests/faults/") else module


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist; without it installed, never called
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") not in ("load", "loadscope"):  # load: what -n alone gives
        return None  # --dist loadfile / worksteal / ... chosen on the command line: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return ModuleScheduling(config, log)


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("engines")  # a test's own marker wins over its module's
    if marker is not None:
        unknown = set(marker.args) - set(ENGINES)
        assert not unknown, f"pytest.mark.engines: no engine {sorted(unknown)}; ENGINES are {ENGINES}"
        metafunc.parametrize("engine", marker.args or ENGINES, indirect=True)


@pytest.fixture(autouse=True)
def engine(request) -> Iterator[str]:
    """The storage engine of this test: ``sqlite``, or ``postgres`` (an empty journal database of its own)."""
    name = getattr(request, "param", "sqlite")
    databases = request.getfixturevalue("postgres_journals") if name == "postgres" else None
    ENGINE.name, ENGINE.database_url = name, databases.take() if databases else ""
    try:
        yield name
    finally:
        url, ENGINE.name, ENGINE.database_url = ENGINE.database_url, "sqlite", ""
        if databases:
            databases.give_back(url)


def test_config(tmp_path, **changes) -> Config:
    """The service's config for a test: its data dir, fast hashes, the test's engine."""
    return Config(data_dir=tmp_path / "data", scrypt_n=TEST_SCRYPT_N, database_url=ENGINE.database_url).with_(**changes)


test_config.__test__ = False  # a helper, not a test


def open_journal(data_dir) -> Storage:
    """The journal of the running test's engine (``data_dir`` on SQLite): as another process opens it."""
    return open_storage(data_dir, ENGINE.database_url)


@contextlib.contextmanager
def write_lock_held(data_dir):
    """Another connection holds the journal's write lock for the block, as `tswarm node add` beside the
    server or another instance's commit does for a moment: SQLite's ``BEGIN IMMEDIATE``
    (tests/test_pool.py), or on PostgreSQL a transaction holding every table of the journal in
    ``EXCLUSIVE`` mode (reads go on, every write waits)."""
    if ENGINE.name == "sqlite":
        from .test_pool import write_lock_held as sqlite_lock_held

        with sqlite_lock_held(data_dir):
            yield
        return
    import psycopg

    with psycopg.connect(ENGINE.database_url) as conn:  # one transaction, rolled back after the block
        conn.execute(f"LOCK TABLE {', '.join(journal_tables(conn))} IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def journal_tables(conn) -> list[str]:
    """Every table of the PostgreSQL journal on ``conn`` but ``schema_version``, quoted for SQL."""
    return [row[0] for row in conn.execute(
        "SELECT quote_ident(tablename) FROM pg_catalog.pg_tables"
        " WHERE schemaname = current_schema() AND tablename <> 'schema_version' ORDER BY tablename")]


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def journal(engine, data_dir):
    with open_journal(data_dir) as j:
        yield j


class ServiceTestServer(TestServer):
    """aiohttp's TestServer with the runner and access logger `tswarm serve` uses (service/server.py),
    so every test sees the service's own answers to malformed requests and its masked access log."""

    async def _make_runner(self, **kwargs):
        return AppRunner(self.app, access_log_class=AccessLogger, **kwargs)


@pytest.fixture
def make_client(aiohttp_client, tmp_path, engine):
    """``await make_client(**config_changes)`` -> an aiohttp test client over ``create_app`` (on the test's engine)."""

    async def make(**changes):
        return await aiohttp_client(ServiceTestServer(create_app(test_config(tmp_path, **changes))))

    return make


@pytest.fixture
async def client(make_client):
    return await make_client()


async def wait_health(client, predicate) -> dict:
    """Poll ``/healthz`` of a test client until ``predicate(health)`` holds; returns that health."""
    for _ in range(500):
        health = await (await client.get("/healthz")).json()
        if predicate(health):
            return health
        await asyncio.sleep(0.01)
    raise AssertionError(f"healthz never matched: {health}")


@pytest.fixture
def run(engine, data_dir, monkeypatch):
    """``run(*args)``: the `tswarm` command in-process (click's CliRunner) on ``data_dir`` and the test's
    engine, with no other TSWARM_* variable, PORT or DATABASE_URL from the environment."""
    for name in [k for k in os.environ if k.startswith("TSWARM_") or k in ("PORT", "DATABASE_URL")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TSWARM_DATA_DIR", str(data_dir))
    if ENGINE.database_url:
        monkeypatch.setenv("TSWARM_DATABASE_URL", ENGINE.database_url)
    runner = CliRunner()

    def invoke(*args, **kw):
        return runner.invoke(cli, list(args), catch_exceptions=False, **kw)

    return invoke


# -- test data: the same few nodes and readings for the export, reader and CLI tests -------------------

NS = 1_000_000_000
T0 = 1_764_000_000 * NS  # 2025-11-24T16:00:00Z

ALL_CSV = (  # the whole export of ``three_nodes``: two readings share 16:05:00
    "time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
    "2025-11-24T16:00:00.000000000Z,kitchen,21.5,40.0,,,,\r\n"
    "2025-11-24T16:01:40.000000000Z,attic,-3.2,80.0,,,,\r\n"
    "2025-11-24T16:05:00.000000000Z,kitchen,21.75,41.0,,,,\r\n"
    "2025-11-24T16:05:00.000000000Z,attic,5.0,70.5,,,,\r\n"
)


@pytest.fixture
def three_nodes(journal):
    """attic, cellar (no reading) and kitchen, created, in the journal (of the test's engine) ``make_client`` and ``run`` use;
    exported whole they are ``ALL_CSV``."""
    for name in ("attic", "cellar", "kitchen"):
        register(journal, name, created=True)
    add_readings(journal, "kitchen", [(T0, 21.5, 40.0), (T0 + 300 * NS, 21.75, 41.0)])
    add_readings(journal, "attic", [(T0 + 100 * NS, -3.2, 80.0), (T0 + 300 * NS, 5.0, 70.5)])
    return journal


def fill_a_and_b(data_dir) -> None:
    """Nodes a and b (registered, never created) with three readings, one nanosecond apart at first, in
    the journal of the test's engine."""
    with open_journal(data_dir) as journal:
        journal.add_node("a", "h")
        journal.add_node("b", "h")
        base = 1_764_000_000 * 10**9
        add_readings(journal, "a", [(base, 21.5, 40.0)])
        add_readings(journal, "b", [(base + 1, -3.2, 80.0)])
        add_readings(journal, "a", [(base + 60 * 10**9, 22.0, 41.5)])


# -- nodes and readings, built through the journal's interface -----------------------------------


def register(journal: Storage, name: str, password: str = "secret-pw", created: bool = False) -> None:
    """Register ``name`` as `tswarm node add` does; ``created``: as if its first POST came (PUT is then
    answered, not 405) without storing a reading."""
    journal.add_node(name, auth.hash_password(password, n=TEST_SCRYPT_N))
    if created:
        journal.mark_created(name, 1)


def add_readings(journal: Storage, name: str, rows: Iterable[tuple[int, float, float]]) -> None:
    """Store readings of ``name`` at the given times: ``rows`` of ``(ts_ns, temperature, humidity)``,
    in one transaction, in the order given (commit order: ids follow it). The writer stamps each
    reading with the time of its commit, so histories of chosen times (and the shared timestamps old
    journals and exports must handle) come through :meth:`Storage.add_readings`."""
    journal.add_readings([(name, ts, t, h) for ts, t, h in rows])


def nodes_table(journal: Storage) -> list[tuple[NodeStatus, str]]:
    """Every registered node as the journal reports it, with its password hash: to compare whole."""
    return [(n, journal.node_auth(n.name).password_hash) for n in journal.list_nodes()]


# -- real servers, shared by tests/integration and tests/faults (see tests/servers.py) -------------------


@pytest.fixture(scope="session")
def influxdb1(tmp_path_factory):
    """One ``influxd`` for the whole session. Tests share it, so each uses its own database
    (``influxdb1.new_database()``). ``.url``, ``.query(q, db=...)``, ``.write(lines, db=...)``."""
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb1")).start()
    yield server
    server.stop()


@pytest.fixture
def influxdb1_factory(tmp_path):
    """``influxdb1_factory(**data_settings)`` starts a private ``influxd`` (for tests that stop, pause or
    reconfigure it); stopped after the test."""
    servers = []

    def start(**data_settings) -> InfluxDB1:
        server = InfluxDB1(tmp_path / f"influxdb1-{len(servers)}", **data_settings)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory):
    """One ``victoria-metrics`` for the session; ``.url``, ``.export(match)``."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics")).start()
    yield server
    server.stop()



@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the session (tests/servers.py): ``.url(db)``,
    ``.new_database()``. Tests share it, so each uses its own database (``postgres_url``)."""
    server = PostgreSQL().start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres) -> str:
    """The URL of a fresh, empty database of the session's cluster, for this test alone."""
    return postgres.new_database()


class JournalDatabases:
    """Databases of one cluster that hold a journal, each lent to one test at a time: :meth:`take` one
    (a new database whose schema ``open_storage`` makes, when none is free), :meth:`give_back` it
    emptied. Emptying (``TRUNCATE``, after ending the connections a test left) costs a tenth of a new
    database; one that cannot be emptied, or whose schema a test changed, is not lent again."""

    def __init__(self, server: PostgreSQL):
        self.server = server
        self.free: list[str] = []

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        url = self.server.new_database()
        open_storage("", url).close()
        return url

    def give_back(self, url: str) -> None:
        if empty_journal_database(url):
            self.free.append(url)


def empty_journal_database(url: str) -> bool:
    """Empty the PostgreSQL journal at ``url`` as a new one is (after ending every other connection to
    it); False if it cannot be, or its schema is not the one tswarm makes."""
    import psycopg

    from tswarm.storage.postgres import SCHEMA_VERSION

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            if conn.execute("SELECT array_agg(version) FROM schema_version").fetchone()[0] != [SCHEMA_VERSION]:
                return False
            conn.execute(f"TRUNCATE {', '.join(journal_tables(conn))} RESTART IDENTITY")
    except psycopg.Error:
        return False
    return True


@contextlib.contextmanager
def fresh_journal(tmp_path_factory) -> Iterator[Storage]:
    """A new, empty journal of the test's engine each time (one per example of a hypothesis test): a
    new data dir on SQLite, the test's database emptied on PostgreSQL."""
    if ENGINE.database_url:
        assert empty_journal_database(ENGINE.database_url)
    with open_journal(tmp_path_factory.mktemp("journal") / "data") as journal:
        yield journal


@contextlib.contextmanager
def journal_database(request, name: str) -> Iterator[str]:
    """For a fixture wider than one test (a module's history, served once per engine): the URL of a
    journal database of engine ``name`` for as long as the block, ``""`` for SQLite (the data dir)."""
    if name == "sqlite":
        yield ""
        return
    databases = request.getfixturevalue("postgres_journals")
    url = databases.take()
    try:
        yield url
    finally:
        databases.give_back(url)


@pytest.fixture(scope="session")
def postgres_journals(postgres) -> JournalDatabases:
    """Journal databases of the session's cluster, one lent to each test the ``engine`` fixture runs on PostgreSQL."""
    return JournalDatabases(postgres)


@pytest.fixture
def postgres_factory():
    """``postgres_factory()`` starts a private cluster (for tests that stop and restart it); removed after the test."""
    servers = []

    def start() -> PostgreSQL:
        servers.append(PostgreSQL())
        return servers[-1].start()

    yield start
    for server in servers:
        server.remove()
