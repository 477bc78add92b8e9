#!/usr/bin/env python3
"""Render the pictures of the master node's screen in docs/flashing.md into docs/img/:
master-128x64.png, master-128x32.png and master-offline.png.

They are what the real firmware draws in the MicroPython Unix port against a real `tswarm serve`
(tests/firmware/test_master.py; the stand-in SSD1306 keeps the display RAM, tests/firmware/screen.py
turns it into a PNG): this runs those tests with MASTER_SCREENS_DIR pointing at docs/img.
Needs the test extras (`make install-test`).

    .venv/bin/python scripts/render-master-screens.py
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = "values_the_service_holds or 128x32 or unreachable_service"

if __name__ == "__main__":
    env = dict(os.environ, MASTER_SCREENS_DIR=str(ROOT / "docs" / "img"))
    command = [sys.executable, "-m", "pytest", "tests/firmware/test_master.py", "-q", "-p", "no:cacheprovider", "-k", TESTS]
    sys.exit(subprocess.call(command, cwd=ROOT, env=env))
