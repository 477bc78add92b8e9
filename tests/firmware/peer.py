"""A loopback HTTP peer that answers the firmware as a script says, for what the real `tswarm serve`
never does: trickle its answer, redirect, answer with a field of the wrong type.

``Peer(answer)``: ``answer(request)`` -> the bytes to send (then the connection closes), or a
:class:`Trickle` (a head sent at once, then ``step`` every ``every`` s until the firmware hangs up
or the test ends). Every request is kept in ``requests`` (its method, path, headers and body), every
accepted connection counted in ``connections`` (a peer that never answers, as a redirect's
Location that is never reached, shows 0).
"""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Trickle:
    head: bytes
    step: bytes
    every: float = 1.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def http(status: int, body: dict | bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 answer with Content-Length."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
    return (head + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + data


@dataclass
class Peer:
    answer: object = None  # callable(Request) -> bytes | Trickle; None: accept and never answer
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __enter__(self) -> "Peer":
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if self.answer is None:  # a peer that never answers
                self._stop.wait()
                return
            conn.settimeout(30)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                length = int(headers.get("Content-Length", 0))
                while len(body) < length:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    body += chunk
                method, path = lines[0].split(" ")[:2]
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = self.answer(request)
                if isinstance(reply, Trickle):
                    conn.sendall(reply.head)
                    while not self._stop.wait(reply.every):
                        conn.sendall(reply.step)
                else:
                    conn.sendall(reply)
            except OSError:  # the firmware hung up (or went to sleep)
                pass


# What the tests that script a peer share (test_bounds.py, test_hostile.py): the board's scenario, its
# expected sleep, a plain 202, and a node's config.json pointing at the peer.
HOME = {"ssids": ["home"]}
FAST = {**HOME, "timer_scale": 0.05}  # the wake's 90 s bound passes in 4.5 s
FIVE_MINUTES = {"esp8266": [{"ms": 300_000, "via": "esp.deepsleep"}],
                "esp32": [{"ms": 300_000, "via": "machine.deepsleep"}]}
STORED = http(202, {"stored": True, "sleep": 300})


def config(url: str, board: str = "esp8266") -> dict:
    return {"modules": {"board": board, "sensor": "dht22", "pins": {"dht": 5 if board == "esp8266" else 4}},
            "netconf": {"ssid": ["home"], "password": ["home-pw"]},
            "svconf": {"url": url + "/api/nodes/kitchen", "login": "kitchen", "xauth": "a2l0Y2hlbjpjaGFuZ2UtbWU="}}


def assert_clean(result) -> None:
    assert "Traceback" not in result.output, result.output
