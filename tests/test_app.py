"""create_app (service/app.py): every key and every resource of the app is declared there."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

import tswarm
from tswarm import keys

SERVICE = Path(tswarm.__file__).parent


def test_keys_are_declared_only_in_keys_py_and_resources_only_in_app_py():
    declares = {
        "web.AppKey(": ["keys.py"],
        "cleanup_ctx.append(": ["app.py", "workers.py"],  # workers.py: the worker's own, around create_app
        "on_startup.append(": ["app.py"],
        "on_shutdown.append(": [],
        "on_cleanup.append(": [],
    }
    for needle, expected in declares.items():
        found = sorted(p.name for p in SERVICE.rglob("*.py") if needle in p.read_text())
        assert found == expected, needle


async def test_every_declared_key_is_set_once_the_app_runs(make_client):
    client = await make_client()  # store=sqlite: no forwarder, but a LEADER (who would run one) all the same
    declared = {name: key for name, key in vars(keys).items() if isinstance(key, web.AppKey)}
    assert set(declared) >= {"CONFIG", "JOURNAL", "WRITER", "STORAGE", "CREDENTIALS", "GUARD", "HASHER",
                             "READERS", "STATS", "METRICS", "LEADER", "KEPT_READ_TOKEN"}
    missing = sorted(name for name, key in declared.items() if key not in client.app)
    assert missing == []
