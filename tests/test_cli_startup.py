"""What the CLI's commands import: not the server's libraries. asyncio alone is about 50 ms of every
start of `tswarm` (measured with ``python -X importtime``), and aiohttp more; the commands that only
read or change the journal need neither. On SQLite (this module is not marked ``engines``): psycopg
imports asyncio itself."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import run_cli, tswarm_env

# Runs one command as `python -m tswarm` does, then says how it ended and which of the server's modules
# it imported.
PROBE = """
import sys
from tswarm.cli import main
try:
    main()
    status = 0
except SystemExit as exc:
    status = exc.code or 0
print(status, sorted(m for m in ("asyncio", "aiohttp", "tswarm.app", "tswarm.storage.group") if m in sys.modules), file=sys.stderr)
"""


def _imported(data_dir, *args: str) -> str:
    """What the command imported; it must have succeeded (an early error would import less)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
        env=tswarm_env(data_dir),
    )
    status, _, imported = proc.stderr.strip().splitlines()[-1].partition(" ")
    assert status == "0", proc.stderr
    return imported


@pytest.mark.parametrize("args", [
    ("node", "list"), ("export",), ("export", "--format", "ndjson"), ("status",), ("node", "add", "porch2"),
    ("halt", "porch"), ("resume", "porch"),
], ids=" ".join)
def test_commands_on_the_journal_import_neither_asyncio_nor_aiohttp(tmp_path, args):
    run_cli(tmp_path, "node", "add", "porch")
    assert _imported(tmp_path, *args) == "['tswarm.storage.group']"  # the writer's module, without asyncio


def test_serve_s_modules_do_import_it(tmp_path):
    """The names the probe looks for are the real ones: importing the server's app brings both in."""
    code = "import sys, tswarm.app; print('asyncio' in sys.modules and 'aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "True"
