"""The export path and the CLI's reading commands load neither aiohttp nor influxdb-client unless they
talk to InfluxDB: with ``store=sqlite``, and with ``store=influxdb`` while the journal still holds the
whole range. Each check runs in a fresh interpreter (a subprocess), where ``sys.modules`` starts empty.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tswarm.export import export_chunks
from tswarm.storage import PRUNED_BEFORE, open_storage
from tests.conftest import register

HEAVY = ("aiohttp", "influxdb_client")

# Imports tswarm's export and CLI, then runs each command line of argv[1] in-process (click's
# CliRunner); prints, as JSON, which of HEAVY were loaded after the imports and after each command,
# with what it printed ("stdout" byte for byte; "output" with standard error, as click shows it).
SCRIPT = f"""
import json, sys
from click.testing import CliRunner
import tswarm.export, tswarm.cli

def heavy():
    return [name for name in {HEAVY!r} if name in sys.modules]

seen = {{"import": heavy()}}
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(tswarm.cli.cli, args)
    seen[" ".join(args)] = {{"exit": result.exit_code, "loaded": heavy(), "output": result.output,
                            "stdout": result.stdout_bytes.decode()}}
print(json.dumps(seen))
"""

READING_COMMANDS = [["export"], ["export", "--format", "ndjson", "--node", "attic"], ["node", "list"], ["status"]]


def run_fresh(data_dir, commands, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TSWARM_") and k != "PORT"}
    environ.update(TSWARM_DATA_DIR=str(data_dir), **env)
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
async def small_journal(make_client, data_dir):
    """Two nodes with readings, stored through the node protocol as a node stores them."""
    client = await make_client()
    with open_storage(data_dir) as journal:
        for name in ("attic", "cellar"):
            register(journal, name)
    for name, data in [("attic", "21.5 40"), ("cellar", "-3.2 80.1"), ("attic", "22 41")]:
        response = await client.post(f"/api/nodes/{name}", json={"name": name, "data": data},
                                     headers={"Authorization": _basic(name)})
        assert response.status == 202
    await client.close()
    with open_storage(data_dir) as journal:
        yield journal


def _basic(name: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{name}:secret-pw".encode()).decode()


def test_importing_export_and_cli_loads_neither(tmp_path):
    assert run_fresh(tmp_path / "data", [])["import"] == []


@pytest.mark.parametrize("store", [
    {"TSWARM_STORE": "sqlite"},
    {"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_API": "1"},
    {"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_API": "2", "TSWARM_INFLUX_ORG": "home"},
], ids=["sqlite", "influxdb-v1", "influxdb-v2"])
async def test_reading_commands_on_a_journal_that_holds_the_whole_range_load_neither(small_journal, data_dir, store, unused_tcp_port):
    # Nothing listens at the InfluxDB URL: a command that asked it would fail.
    seen = run_fresh(data_dir, READING_COMMANDS, TSWARM_INFLUX_URL=f"http://127.0.0.1:{unused_tcp_port}", **store)
    for args in READING_COMMANDS:
        ran = seen[" ".join(args)]
        assert (ran["exit"], ran["loaded"]) == (0, []), (args, ran)
    assert seen["export"]["stdout"] == "".join(export_chunks(small_journal))
    assert seen["export --format ndjson --node attic"]["stdout"] == "".join(
        export_chunks(small_journal, fmt="ndjson", node="attic")
    )
    assert "attic" in seen["node list"]["output"] and "cellar" in seen["node list"]["output"]


async def test_an_export_below_the_horizon_on_the_v2_api_does_load_influxdb_client(small_journal, data_dir, unused_tcp_port):
    """The control: where InfluxDB must answer, its client is loaded (and, unreachable here, the export fails)."""
    small_journal.set_meta(PRUNED_BEFORE, str(10**18))
    seen = run_fresh(data_dir, [["export"]], TSWARM_STORE="influxdb", TSWARM_INFLUX_API="2", TSWARM_INFLUX_ORG="home",
                     TSWARM_INFLUX_URL=f"http://127.0.0.1:{unused_tcp_port}")
    assert seen["export"]["exit"] == 1
    assert seen["export"]["output"].startswith(
        f"Error: readings the journal has pruned are only in InfluxDB v2 API at http://127.0.0.1:{unused_tcp_port}"
    )
    assert "influxdb_client" in seen["export"]["loaded"]
