"""`tswarm export` (the same code path as /api/readings) with its progress bar, and `tswarm node interval`."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios

import pytest

from tswarm.storage import open_storage

from .conftest import register
from .servers import TSWARM, run_cli, tswarm_env
from .test_readers import ALL_CSV, NS, T0, add_readings


@pytest.fixture
def filled(data_dir):
    with open_storage(data_dir) as journal:
        for name in ("attic", "cellar", "kitchen"):
            register(journal, name, created=True)
        add_readings(journal, "kitchen", [(T0, 21.5, 40.0), (T0 + 300 * NS, 21.75, 41.0)])
        add_readings(journal, "attic", [(T0 + 100 * NS, -3.2, 80.0), (T0 + 300 * NS, 5.0, 70.5)])
    return data_dir


async def test_cli_export_and_the_api_give_the_same_bytes(filled, make_client, tmp_path):
    out = tmp_path / "out.csv"
    run_cli(filled, "export", "-o", str(out))
    assert out.read_bytes().decode() == ALL_CSV
    client = await make_client()  # the same data dir
    assert await (await client.get("/api/readings")).text() == ALL_CSV
    assert run_cli(filled, "export").stdout.replace("\r\n", "\n") == ALL_CSV.replace("\r\n", "\n")


def test_no_progress_bar_when_piped(filled):
    proc = run_cli(filled, "export", "--format", "ndjson")
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 4


def test_a_progress_bar_on_a_terminal(filled, tmp_path):
    out = tmp_path / "out.csv"
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # 30 x 100, as a terminal has
    try:
        proc = subprocess.run(
            TSWARM + ["export", "-o", str(out)], env=tswarm_env(filled),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal, timeout=60,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not data:
                break
            shown += data
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert out.read_bytes().decode() == ALL_CSV
    text = shown.decode()
    assert "100%" in text and "4.00/4.00" in text and "rows/s" in text, text


def test_node_interval_sets_the_expected_interval(filled):
    assert run_cli(filled, "node", "interval", "attic", "900").stdout == "attic: a reading expected every 900 s\n"
    with open_storage(filled) as journal:
        assert {n.name: n.interval_s for n in journal.list_nodes()} == {"attic": 900, "cellar": 300, "kitchen": 300}
    assert run_cli(filled, "node", "interval", "attic", "5", check=False).returncode == 2
    missing = run_cli(filled, "node", "interval", "garage", "600", check=False)
    assert missing.returncode == 1 and "no node named 'garage'" in missing.stderr
