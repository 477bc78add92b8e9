"""A swarm for fault tests: nodes send readings whose values encode (node, sequence), so every
acknowledged reading can be found again exactly. Runs in its own thread with its own event loop."""
from __future__ import annotations

import asyncio
import base64
import collections
import json
import threading
from dataclasses import dataclass, field

import aiohttp


def encode(seq: int) -> tuple[float, float]:
    """A sequence number as a valid DHT22 reading: 1201 temperatures x 1001 humidities."""
    return round(-40 + (seq // 1001) / 10, 1), round((seq % 1001) / 10, 1)


def decode(temperature: float, humidity: float) -> int:
    return round((temperature + 40) * 10) * 1001 + round(humidity * 10)


def error_code(raw: bytes) -> str:
    """The ``error`` of a JSON error body; ``"<not JSON>"`` when the body is not one."""
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return "<not JSON>"


@dataclass
class Swarm:
    url: str
    names: list[str]
    password: str
    pause: float = 0.0  # seconds between one node's readings
    acked: set = field(default_factory=set)  # (node, seq)
    statuses: dict = field(default_factory=dict)
    refusals: collections.Counter = field(default_factory=collections.Counter)  # (status, error, Retry-After) of 4xx/5xx
    tried: int = 0

    def start(self) -> "Swarm":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "Swarm":
        self._stop.set()
        self._thread.join(120)
        return self

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0), timeout=timeout) as s:
            await asyncio.gather(*(self._node(s, name) for name in self.names))

    async def _node(self, session: aiohttp.ClientSession, name: str) -> None:
        headers = {"Authorization": " Basic " + base64.b64encode(f"{name}:{self.password}".encode()).decode()}
        seq = 0
        while not self._stop.is_set():
            t, h = encode(seq)
            body = json.dumps({"name": name, "data": f"{t} {h}"})
            self.tried += 1
            try:
                async with session.put(f"{self.url}/api/nodes/{name}", data=body, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
                    if status >= 400:
                        self.refusals[status, error_code(raw), resp.headers.get("Retry-After")] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                status = 0  # connection refused or cut: the service is down
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status in (202, 423):
                self.acked.add((name, seq))
            seq += 1  # a new reading every time, as a node that sleeps and wakes
            await asyncio.sleep(self.pause if status else 0.05)
