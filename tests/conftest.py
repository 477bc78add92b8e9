from __future__ import annotations

import asyncio
import os
from typing import Iterable

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

from .servers import InfluxDB1, PostgreSQL, VictoriaMetrics

# No test here measures time with hypothesis: its per-example deadline (200 ms by default) only
# turns a slow moment of a loaded machine (CI, `make test` beside a build) into a failure.
settings.register_profile("tswarm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tswarm")

TEST_SCRYPT_N = 2**10  # fast hashes for unit tests; the real cost is measured in benchmarks/


def test_config(tmp_path, **changes) -> Config:
    return Config(data_dir=tmp_path / "data", scrypt_n=TEST_SCRYPT_N).with_(**changes)


test_config.__test__ = False  # a helper, not a test


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def journal(data_dir):
    with open_storage(data_dir) as j:
        yield j


class ServiceTestServer(TestServer):
    """aiohttp's TestServer with the runner and access logger `tswarm serve` uses (service/server.py),
    so every test sees the service's own answers to malformed requests and its masked access log."""

    async def _make_runner(self, **kwargs):
        return AppRunner(self.app, access_log_class=AccessLogger, **kwargs)


@pytest.fixture
def make_client(aiohttp_client, tmp_path):
    """``await make_client(**config_changes)`` -> an aiohttp test client over ``create_app``."""

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
def run(data_dir, monkeypatch):
    """``run(*args)``: the `tswarm` command in-process (click's CliRunner) on ``data_dir``, with no
    other TSWARM_* variable or PORT from the environment."""
    monkeypatch.delenv("PORT", raising=False)
    for name in [k for k in os.environ if k.startswith("TSWARM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TSWARM_DATA_DIR", str(data_dir))
    runner = CliRunner()

    def invoke(*args, **kw):
        return runner.invoke(cli, list(args), catch_exceptions=False, **kw)

    return invoke


# -- test data: the same few nodes and readings for the export, reader and CLI tests -------------------

NS = 1_000_000_000
T0 = 1_764_000_000 * NS  # 2025-11-24T16:00:00Z

ALL_CSV = (  # the whole export of ``three_nodes``: two readings share 16:05:00
    "time,node,temperature,humidity\r\n"
    "2025-11-24T16:00:00.000000000Z,kitchen,21.5,40.0\r\n"
    "2025-11-24T16:01:40.000000000Z,attic,-3.2,80.0\r\n"
    "2025-11-24T16:05:00.000000000Z,kitchen,21.75,41.0\r\n"
    "2025-11-24T16:05:00.000000000Z,attic,5.0,70.5\r\n"
)


@pytest.fixture
def three_nodes(journal):
    """attic, cellar (no reading) and kitchen, created, in the data dir ``make_client`` and ``run`` use;
    exported whole they are ``ALL_CSV``."""
    for name in ("attic", "cellar", "kitchen"):
        register(journal, name, created=True)
    add_readings(journal, "kitchen", [(T0, 21.5, 40.0), (T0 + 300 * NS, 21.75, 41.0)])
    add_readings(journal, "attic", [(T0 + 100 * NS, -3.2, 80.0), (T0 + 300 * NS, 5.0, 70.5)])
    return journal


def fill_a_and_b(data_dir) -> None:
    """Nodes a and b (registered, never created) with three readings, one nanosecond apart at first."""
    with open_storage(data_dir) as journal:
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
