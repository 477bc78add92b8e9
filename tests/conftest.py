from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings

from tswarm import auth
from tswarm.app import create_app
from tswarm.storage import Storage, open_storage
from tswarm.server import AccessLogger, AppRunner
from tswarm.settings import Config

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


def register(journal: Storage, name: str, password: str = "secret-pw", created: bool = False) -> None:
    journal.add_node(name, auth.hash_password(password, n=TEST_SCRYPT_N))
    if created:
        journal.mark_created(name, 1)
