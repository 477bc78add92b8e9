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
