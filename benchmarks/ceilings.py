"""The ceilings tswarm's ingest is measured against, each started on a free loopback port.

- :class:`BareAiohttp`: a bare aiohttp handler (``python ceilings.py aiohttp --port P``): a
  ``web.Application`` with one PUT route, ``/api/nodes/{name}``, that reads the request body and
  answers 202 with a small JSON body. No auth, no JSON parsing, no storage, access log off, the same
  event loop as tswarm (asyncio's default). What tswarm costs above it is tswarm's own work.
- :class:`Nginx`: nginx (Debian's, ``scripts/bench-deps.sh``) answering ``return 202`` with a JSON
  body, one worker process, access log off. Not the system service: its own configuration, prefix,
  pid file and error log in a temporary folder; started in the foreground (``daemon off``) so it is
  our child, stopped by its PID (SIGTERM: nginx's fast shutdown).

Both answer ``GET /healthz`` (200) so the harness knows when they listen.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import free_port, process_cpu_seconds, tree_pids

BODY = b'{"stored": true}'

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location = /healthz {{
            return 200 '{{"ok": true}}';
        }}
        location / {{
            return 202 '{body}';
        }}
    }}
}}
"""


def bare_app():
    """The bare aiohttp handler: one PUT route answering 202 JSON (and /healthz)."""
    from aiohttp import web

    async def put_reading(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=BODY, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok": true}', content_type="application/json")

    app = web.Application()
    app.router.add_put("/api/nodes/{name}", put_reading)
    app.router.add_get("/healthz", healthz)
    return app


class _Process:
    """A server process we start and stop by PID, with the CPU its process tree used."""

    name = "process"

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        self._log.seek(0)
        raise RuntimeError(f"{self.name} did not start: {self._log.read().decode(errors='replace')[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pids())


class BareAiohttp(_Process):
    name = "bare aiohttp"

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "aiohttp", "--port", str(self.port)]


class Nginx(_Process):
    name = "nginx"

    def __init__(self, nginx: str | None = None):
        super().__init__()
        self.nginx = nginx or shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(self.nginx).exists():
            raise RuntimeError("nginx is not installed: run `make bench-deps` (scripts/bench-deps.sh)")
        self._prefix = tempfile.TemporaryDirectory(prefix="tswarm-bench-nginx-")
        prefix = Path(self._prefix.name)
        prefix.chmod(0o755)  # the worker process may run as another user (nginx's `user` when started as root)
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=self.port, body=BODY.decode()))

    def command(self) -> list[str]:
        prefix = self._prefix.name
        return [self.nginx, "-p", prefix, "-c", f"{prefix}/nginx.conf", "-e", f"{prefix}/error.log"]

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._prefix.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=["aiohttp"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from aiohttp import web

    web.run_app(bare_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)
