"""A loopback TCP relay that records every exchange between the firmware and `tswarm serve`:
the exact request bytes the node sent and the response bytes it got back.

Not a mock: the real service answers; this only listens in, so tests can check the exact
Authorization header and the PUT/POST sequence without depending on the service's log format.

With ``cut`` = (text, n) the relay drops the connection after n bytes of the answer to a request
containing ``text`` (the Wi-Fi going in the middle of a download).

With ``certfile`` the relay speaks TLS to the node (as Cloudflare or nginx in front of tswarm
would) and plain HTTP to the service; it records the decrypted bytes and the SNI name the node sent.
"""
from __future__ import annotations

import json
import select
import socket
import socketserver
import ssl
import threading
import zlib
from dataclasses import dataclass

from tests.servers import run_cli, tswarm_env


@dataclass
class Exchange:
    request: bytes
    response: bytes
    server_name: str | None = None  # TLS only: the SNI the client sent

    @property
    def method(self) -> str:
        return self.request.split(b" ", 1)[0].decode()

    @property
    def status(self) -> int:
        return int(self.response.split(b" ", 2)[1]) if self.response else 0


class RecordingRelay:
    def __init__(self, target_port: int, certfile: str | None = None, cut: tuple[bytes, int] | None = None):
        relay = self
        self.cut = cut
        context = None
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile)
        self.exchanges: list[tuple[int, Exchange]] = []  # (accepted as n-th connection, exchange)
        self._accepted = 0
        self._order: dict[int, int] = {}  # fileno of an accepted connection -> its place in accept order
        self._busy = 0
        self._idle = threading.Condition()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                # recorded in the order the connections came, not the order they ended: a board may send
                # its next request before the relay has seen the last one's connection close
                place = relay._order.pop(self.request.fileno())
                record = lambda exchange: relay.exchanges.append((place, exchange))  # noqa: E731
                request, response = bytearray(), bytearray()
                server_name = None
                if context is not None:
                    names = []
                    context.sni_callback = lambda sock, name, ctx: names.append(name)
                    try:
                        self.request = context.wrap_socket(self.request, server_side=True)
                    except (OSError, ssl.SSLError):
                        record(Exchange(b"", b""))
                        return
                    server_name = names[0] if names else None
                try:
                    upstream = socket.create_connection(("127.0.0.1", target_port), timeout=30)
                except OSError:
                    return
                with upstream:
                    open_ends = {self.request: upstream, upstream: self.request}
                    while open_ends:
                        # decrypted bytes waiting inside the TLS socket do not wake select()
                        readable = [s for s in open_ends if isinstance(s, ssl.SSLSocket) and s.pending()]
                        readable = readable or select.select(list(open_ends), [], [], 30)[0]
                        if not readable:
                            break
                        for sock in readable:
                            peer = open_ends[sock]
                            try:
                                data = sock.recv(65536)
                            except (ConnectionResetError, ssl.SSLError):  # the node closes without reading the body
                                data = b""
                            if not data:
                                del open_ends[sock]
                                if isinstance(peer, ssl.SSLSocket):  # its shutdown() would drop TLS
                                    open_ends.clear()
                                    break
                                try:
                                    peer.shutdown(socket.SHUT_WR)
                                except OSError:
                                    pass
                                continue
                            if sock is upstream and relay.cut and relay.cut[0] in request:
                                data = data[:max(0, relay.cut[1] - len(response))]
                                if len(response) + len(data) >= relay.cut[1]:
                                    response.extend(data)
                                    self.request.sendall(data)
                                    open_ends.clear()  # both ends closed, mid-answer
                                    break
                            (request if sock is self.request else response).extend(data)
                            try:
                                peer.sendall(data)
                            except OSError:
                                pass
                if context is not None:
                    self.request.close()
                record(Exchange(bytes(request), bytes(response), server_name))

            def finish(self):
                with relay._idle:
                    relay._busy -= 1
                    relay._idle.notify_all()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

            def process_request(self, request, client_address):
                with relay._idle:  # counted before the handler runs, so take() cannot miss it
                    relay._busy += 1
                    relay._order[request.fileno()] = relay._accepted
                    relay._accepted += 1
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "RecordingRelay":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def take(self, timeout: float = 30) -> list[Exchange]:
        """The exchanges so far (waiting for any still open), and forget them."""
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout)
            taken, self.exchanges = self.exchanges, []
        return [exchange for _, exchange in sorted(taken, key=lambda placed: placed[0])]


def node_config(service, relay: "RecordingRelay", request, password: str, board: str = "esp8266") -> tuple[str, dict]:
    """``(name, config)`` of a node named after the running test, from the real `tswarm node config`
    of ``service``: two networks (``attic`` first, then ``home``), its URL through ``relay`` (whose
    record is emptied)."""
    name = f"{request.node.name[5:25].replace('_', '-').strip('-[]')}-{zlib.crc32(request.node.name.encode()):08x}"
    env = tswarm_env(service.data_dir, TSWARM_PUBLIC_URL=f"http://127.0.0.1:{relay.port}")
    out = run_cli(service.data_dir, "node", "config", name, "--password", password, "--board", board,
                  "--wifi-ssid", "attic", "--wifi-password", "attic-pw", "--wifi-ssid", "home",
                  "--wifi-password", "home-pw", "--allow-loopback", env=env).stdout
    relay.take()
    return name, json.loads(out)
