"""Retention (service/retention.py): which readings a prune deletes, by store, the setting that says how
old they may get, and the pruning task inside the service."""
from __future__ import annotations

import asyncio

import pytest

from tswarm.app import create_app
from tswarm.storage import storage_for
from tswarm.retention import prune
from tswarm.settings import Config, ConfigError
from tests.conftest import add_readings, register, test_config, wait_health

pytestmark = pytest.mark.engines


def test_prune_deletes_only_old_forwarded_readings(journal, tmp_path):
    register(journal, "a")
    add_readings(journal, "a", [(ts, 20, 50) for ts in (1_000, 2_000, 3_000, 4_000)])
    ids = [r.id for r in journal.outbox_readings(0, 10)]
    journal.mark_forwarded(ids[2])  # 1000, 2000, 3000 forwarded; 4000 waits
    config = test_config(tmp_path, store="influxdb", journal_retention=1)
    assert prune(journal, config, now_ns=1_000_000_000 + 3_500) == 3
    assert [r.ts for r in journal.outbox_readings(0, 10)] == [4_000]


def test_store_sqlite_prunes_only_when_retention_is_set(journal, tmp_path):
    register(journal, "a")
    add_readings(journal, "a", [(ts, 20, 50) for ts in (1_000, 2_000)])
    now = 10 * 86400 * 10**9
    assert prune(journal, test_config(tmp_path, store="sqlite"), now_ns=now) == 0
    assert prune(journal, test_config(tmp_path, store="sqlite", journal_retention=86400), now_ns=now) == 2


def test_retention_setting_takes_units_and_defaults_by_store():
    assert Config.from_env({"TSWARM_JOURNAL_RETENTION": "12h"}).retention_s == 12 * 3600
    assert Config.from_env({"TSWARM_JOURNAL_RETENTION": "90"}).retention_s == 90
    assert Config.from_env({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_ORG": "home"}).retention_s == 30 * 86400
    assert Config.from_env({}).retention_s == 0
    with pytest.raises(ConfigError, match="TSWARM_JOURNAL_RETENTION"):
        Config.from_env({"TSWARM_JOURNAL_RETENTION": "a month"})


async def test_the_service_prunes_old_forwarded_readings_but_never_one_that_waits(aiohttp_client, tmp_path, unused_tcp_port):
    """InfluxDB is down (nothing listens on its port), so the third reading keeps waiting."""
    influx_url = f"http://127.0.0.1:{unused_tcp_port}"
    config = test_config(tmp_path, store="influxdb", influx_api="1", influx_url=influx_url, journal_retention=86400)
    old = 1_000_000_000_000_000_000  # 2001
    with storage_for(config) as journal:
        register(journal, "a", created=True)
        add_readings(journal, "a", [(ts, 20, 50) for ts in (old, old + 1, old + 2)])
        journal.mark_forwarded(journal.outbox_readings(0, 10)[1].id)  # the third still waits
    client = await aiohttp_client(create_app(config))
    with storage_for(config) as journal:
        for _ in range(500):
            if journal.count_outbox(0) < 3:
                break
            await asyncio.sleep(0.01)
        assert [r.ts for r in journal.outbox_readings(0, 10)] == [old + 2]
    health = await wait_health(client, lambda h: h["last_error"] is not None)
    assert health["backlog"] == 1



def test_an_export_under_way_keeps_every_row_a_prune_deletes_meanwhile(journal, data_dir, tmp_path):
    """The export reads one snapshot: a prune on another connection in the middle of it takes nothing
    from the rows it gives (here with store=sqlite and an explicit retention: nothing comes back from
    InfluxDB, so a row lost would be missing)."""
    from tswarm.export import export_chunks
    from tests.conftest import open_journal

    register(journal, "a")
    add_readings(journal, "a", [(ts, 20, 50) for ts in range(1_000, 1_000 + 20_000)])
    config = test_config(tmp_path, store="sqlite", journal_retention=1)
    with journal.snapshot():
        chunks = export_chunks(journal, fmt="csv")
        first = [next(chunks), next(chunks)]
        with open_journal(data_dir) as pruner:
            assert prune(pruner, config, now_ns=10**12) == 20_000
        text = "".join(first) + "".join(chunks)
    assert text.count("\r\n") == 20_001
