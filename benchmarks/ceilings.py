"""The ceilings tswarm's ingest is measured against, each started on a free loopback port.

- :class:`BareAiohttp`: a bare aiohttp handler (``python ceilings.py aiohttp --port P``): a
  ``web.Application`` with one PUT route, ``/api/nodes/{name}``, that reads the request body and
  answers 202 with a small JSON body. No auth, no JSON parsing, no storage, access log off, the same
  event loop as tswarm (asyncio's default). What tswarm costs above it is tswarm's own work.
  ``--processes N``: N such processes sharing the port (``SO_REUSEPORT``, as ``tswarm serve
  --workers N`` shares it), the most N workers of any aiohttp app could reach on this machine
  (benchmarks/workers.py).
- :class:`Nginx`: nginx (Debian's, ``scripts/bench-deps.sh``) answering ``return 202`` with a JSON
  body, one worker process, access log off. Not the system service: its own configuration, prefix,
  pid file and error log in a temporary folder; started in the foreground (``daemon off``) so it is
  our child, stopped by its PID (SIGTERM: nginx's fast shutdown).

Both answer ``GET /healthz`` (200) so the harness knows when they listen.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import context_switches, free_port, process_cpu_seconds, tree_pids

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

    def switches(self) -> tuple[int, int]:
        return context_switches(self.pids())


class BareAiohttp(_Process):
    name = "bare aiohttp"

    def __init__(self, processes: int = 1):
        super().__init__()
        self.processes = processes

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "aiohttp", "--port", str(self.port),
                "--processes", str(self.processes)]


async def serve_bare(sock: socket.socket) -> None:
    """One bare aiohttp process on the listening ``sock``, as ``web.run_app`` runs it (an AppRunner,
    a site, no access log), until SIGTERM."""
    from aiohttp import web

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = web.AppRunner(bare_app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await stop.wait()
    await runner.cleanup()


def run_bare(port: int, processes: int) -> None:
    """``processes`` bare aiohttp processes on ``port``, as ``tswarm serve --workers N`` shares it
    (service/workers.py): a listening ``SO_REUSEPORT`` socket each, all bound before the first fork,
    so the kernel spreads connections over every process from the start. This one serves the first
    socket; when SIGTERM stops it (even before its event loop runs), it stops the others and waits."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sockets = []
    for _ in range(processes):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if processes > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)  # web.run_app's backlog
        sockets.append(sock)
    children = []
    try:
        for sock in sockets[1:]:
            pid = os.fork()
            if pid == 0:  # a child: never back into this frame's finally (its siblings are not its own)
                try:
                    asyncio.run(serve_bare(sock))
                finally:
                    os._exit(0)
            children.append(pid)
        asyncio.run(serve_bare(sockets[0]))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


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
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes is at least 1")
    run_bare(args.port, args.processes)
