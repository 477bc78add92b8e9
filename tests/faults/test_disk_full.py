"""Disk full: the data dir on a small tmpfs. When it fills, nodes get 503 with Retry-After, nothing
acknowledged is lost, nothing is half-written, and the service recovers by itself when space is freed."""
import json
import os
import subprocess

import pytest

from tests.servers import IN_CI, ServiceProcess, add_node, run_cli
from tests.integration.test_serve import PW, put


def export_rows(data_dir):
    return run_cli(data_dir, "export").stdout.splitlines()


def tmpfs_mount(path, size):
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the disk-full test needs root to mount a tmpfs")
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def fill_disk(path):
    """Write zeros until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_disk_full_gets_503_with_retry_after_and_recovers_when_space_is_freed(tmp_path):
    mount = tmp_path / "small"
    tmpfs_mount(mount, "2m")
    try:
        data_dir = mount / "data"
        add_node(data_dir, "n1", PW)
        with ServiceProcess(data_dir, log_path=tmp_path / "serve.log") as service:
            assert put(service, "n1", "20 50", method="POST")[0] == 202
            filler = mount / "filler"
            fill_disk(filler)
            acked, refused = 1, 0
            for i in range(300):
                status, headers, raw = put(service, "n1", "21 51")
                assert status in (202, 503), raw
                if status == 503:
                    refused += 1
                    assert int(headers["Retry-After"]) > 0
                    assert json.loads(raw)["error"] == "journal_unavailable"
                    if refused >= 3:
                        break
                else:
                    acked += 1
            assert refused >= 3, "the disk never filled"
            filler.unlink()
            assert put(service, "n1", "22 52")[0] == 202  # recovers by itself, no restart
            acked += 1
        rows = export_rows(data_dir)
        assert len(rows) - 1 == acked
        check = subprocess.run(["sqlite3", str(data_dir / "tswarm.db"), "PRAGMA integrity_check"], capture_output=True, text=True)
        assert check.stdout.strip() == "ok"
        print(f"disk full: {acked} acked, {refused} refused with 503, 0 lost")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_export_to_a_file_the_disk_cannot_hold_is_removed_and_says_so(tmp_path):
    """`tswarm export -o FILE` onto a file system that fills midway (8 KB of a 15 KB export written):
    one error line, exit 1, and the file that held part of the export is gone (before: it stayed, and
    a short CSV passes for a whole one)."""
    data_dir = tmp_path / "data"
    add_node(data_dir, "n1", PW)
    with ServiceProcess(data_dir, log_path=tmp_path / "serve.log") as service:
        for _ in range(300):
            assert put(service, "n1", "21.5 40.5", method="POST")[0] == 202
    assert len(run_cli(data_dir, "export").stdout) > 12 * 1024
    mount = tmp_path / "small"
    tmpfs_mount(mount, "8k")
    try:
        output = mount / "readings.csv"
        proc = run_cli(data_dir, "export", "-o", str(output), check=False)
        assert proc.returncode == 1, proc
        assert proc.stderr.strip().splitlines() == [
            f"Error: -o {output}: the export could not be written (No space left on device);"
            f" {output} was removed (it held part of the export)"], proc.stderr
        assert not output.exists()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
