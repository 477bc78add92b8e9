"""A million readings through GET /api/readings of a real `tswarm serve`: every row once, in order,
with the server's memory flat while it streams (its RSS is sampled from /proc during the download)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tswarm import auth
from tswarm.storage import open_storage
from tswarm.timefmt import rfc3339
from tests.conftest import ENGINES, add_readings, journal_database
from tests.servers import ServiceProcess, tswarm_env

pytestmark = pytest.mark.integration

ROWS = 1_000_000
NODES = 10
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
RSS_GROWTH_LIMIT_KB = 100 * 1024  # generous: a buffered export would grow by the export's size (~50 MB+)


def row(i: int) -> tuple[int, str, float, float]:
    """Row i of the generated history: NODES readings share each second, so order needs (ts, id)."""
    return T0 + (i // NODES) * NS, f"n{i % NODES}", float(i % 40) - 10.0, float(i % 100) + 0.5


@pytest.fixture(scope="module", params=ENGINES)
def million(request, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """The history in a journal of each engine in turn: its data dir and database URL ("" on SQLite)."""
    with journal_database(request, request.param) as database_url:
        yield _fill(tmp_path_factory.mktemp("export") / "data", database_url), database_url


def _fill(data_dir: Path, database_url: str) -> Path:
    with open_storage(data_dir, database_url) as journal:
        for n in range(NODES):
            journal.add_node(f"n{n}", auth.hash_password("pw", n=2**4))
        for n in range(NODES):  # node by node: at each second the ids still run n0, n1, ... as row() orders them
            add_readings(journal, f"n{n}", ((ts, t, h) for ts, _, t, h in map(row, range(n, ROWS, NODES))))
    return data_dir


@pytest.fixture(scope="module")
def service(million):
    data_dir, database_url = million
    env = tswarm_env(data_dir, **({"TSWARM_DATABASE_URL": database_url} if database_url else {}))
    with ServiceProcess(data_dir, env=env) as svc:
        yield svc


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.done = pid, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            self.samples.append(rss_kb(self.pid))
            time.sleep(0.05)


def test_a_million_rows_stream_once_in_order_with_flat_memory(service):
    pid = service.proc.pid
    baseline = rss_kb(pid)
    sampler = RssSampler(pid)
    sampler.start()
    started = time.monotonic()
    with urllib.request.urlopen(f"{service.url}/api/readings?format=csv", timeout=120) as resp:
        assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
        assert resp.readline() == b"time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        count = 0
        for count, line in enumerate(resp, start=1):
            ts, name, t, h = row(count - 1)
            expected = f"{rfc3339(ts)},{name},{t},{h},,,,\r\n".encode()
            if line != expected:
                raise AssertionError(f"row {count - 1}: got {line!r}, expected {expected!r}")
    elapsed = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    peak = max(sampler.samples)
    print(
        f"\n{count} rows in {elapsed:.1f} s; server RSS before {baseline / 1024:.1f} MiB, "
        f"peak while streaming {peak / 1024:.1f} MiB (+{(peak - baseline) / 1024:.1f} MiB), "
        f"{len(sampler.samples)} samples"
    )
    assert count == ROWS
    assert len(sampler.samples) >= 5  # the download took long enough to be watched
    assert peak - baseline < RSS_GROWTH_LIMIT_KB


def test_paging_with_the_cursor_gives_every_row_once(service):
    """Three CSV pages joined by X-Next-Cursor are byte for byte the whole export (checked above
    row by row), so no row is lost or repeated at a page boundary, even inside one second."""
    whole = hashlib.sha256()
    with urllib.request.urlopen(f"{service.url}/api/readings", timeout=120) as resp:
        assert resp.readline() == b"time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
        while block := resp.read(1 << 20):
            whole.update(block)
    joined, pages, first_rows, cursor = hashlib.sha256(), 0, [], None
    while True:
        url = f"{service.url}/api/readings?limit=333335" + (f"&cursor={cursor}" if cursor else "")
        with urllib.request.urlopen(url, timeout=120) as resp:
            pages += 1
            assert resp.readline() == b"time,node,temperature,humidity,vbat,rssi,awake_ms,lost\r\n"
            first = resp.readline()
            first_rows.append(first)
            joined.update(first)
            while block := resp.read(1 << 20):
                joined.update(block)
            cursor = resp.headers.get("X-Next-Cursor")
        if not cursor:
            break
    assert pages == 3
    expected_firsts = [row(i) for i in (0, 333_335, 666_670)]  # 333335: mid-second (10 rows a second)
    assert first_rows == [f"{rfc3339(ts)},{n},{t},{h},,,,\r\n".encode() for ts, n, t, h in expected_firsts]
    assert joined.hexdigest() == whole.hexdigest()


def test_readers_that_hang_up_midway_free_their_export_threads(service):
    """The service runs at most 4 exports at once; if abandoned ones kept their threads, the
    next export would wait for ever (here: until the 60 s timeout fails the test)."""
    import http.client

    for _ in range(6):
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        conn.request("GET", "/api/readings?format=csv")
        resp = conn.getresponse()
        assert resp.status == 200
        assert len(resp.read(1_000_000)) == 1_000_000
        conn.sock.shutdown(2)  # hang up with most of the export unread
        conn.close()
    with urllib.request.urlopen(f"{service.url}/api/readings?format=ndjson&limit=3", timeout=60) as resp:
        assert [json.loads(line)["node"] for line in resp] == ["n0", "n1", "n2"]
    with urllib.request.urlopen(f"{service.url}/api/nodes", timeout=60) as resp:
        assert len(json.load(resp)["nodes"]) == NODES
    hung_up = 'tswarm_http_requests_total{route="/api/readings",status="499"} 6.0'
    deadline = time.monotonic() + 60  # the service notices a hang-up at its next write
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{service.url}/metrics", timeout=60) as resp:
            if hung_up in resp.read().decode():
                break
        time.sleep(0.2)
    else:
        raise AssertionError("the six hang-ups were not counted as 499")
    assert "Traceback" not in service.log()
