"""`tswarm serve --workers 2`: the real supervisor and its worker processes on one loopback port.

Nodes send over new connections, as they do after deep sleep; what the workers acknowledged is read
back from the journal (and from a real InfluxDB 1.x) and compared whole.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tswarm import auth
from tswarm.storage import open_storage
from tests.integration.test_influx import influx1_env, wait_for
from tests.conftest import add_readings
from tests.servers import TSWARM, ServiceProcess, request, run_cli, tswarm_env

pytestmark = pytest.mark.integration

PW = "pw-workers-test"
WORKERS = ("--workers", "2")


def register(data_dir, count: int) -> list[str]:
    """``count`` nodes with a cheap hash (the service verifies whatever parameters a hash carries)."""
    names = [f"n{i:02d}" for i in range(count)]
    with open_storage(data_dir) as journal:
        for name in names:
            journal.add_node(name, auth.hash_password(PW, n=2**4))
    return names


def post(service, name: str, data: str, password: str = PW) -> int:
    """One reading over a new connection, as the firmware sends it; returns the status."""
    headers = {"Authorization": " Basic " + base64.b64encode(f"{name}:{password}".encode()).decode(),
               "Content-Type": "application/json"}
    return request("POST", f"{service.url}/api/nodes/{name}", json.dumps({"name": name, "data": data}), headers)[0]


def readings(name: str, count: int) -> list[tuple[str, str]]:
    """``count`` readings of node ``name``, each with its own temperature (so each is recognisable)."""
    return [(name, f"{k / 10:.1f} 50") for k in range(count)]


def journal_rows(data_dir) -> list[tuple]:
    """``(id, ts, node, temperature, humidity)`` of every reading, in commit order."""
    with open_storage(data_dir) as journal:
        return [(r.id, r.ts, r.node, r.temperature, r.humidity) for r in journal.outbox_readings(0, 10**9)]


def healthz(service) -> dict:
    return json.loads(request("GET", service.url + "/healthz", timeout=10)[2])


def worker_pids(service, count: int = 2, timeout: float = 30) -> dict[int, int]:
    """``{worker index: pid}`` as /healthz reports them, asked over new connections until all answered."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered /healthz"
        doc = healthz(service)
        seen[doc["worker"]] = doc["pid"]
    return seen


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def served_by(log: str) -> dict[str, int]:
    """How many node readings each worker answered, from the access log lines (``ACCESS_LOG`` on)."""
    counts: dict[str, int] = {}
    for worker in re.findall(r"\[worker (\d+)\] aiohttp\.access: .* \"POST /api/nodes/", log):
        counts[worker] = counts.get(worker, 0) + 1
    return counts


@pytest.mark.parametrize("clock", ["right", "behind"])
def test_every_acknowledged_reading_is_stored_once_with_timestamps_unique_and_increasing_across_workers(tmp_path, clock):
    data_dir = tmp_path / "data"
    names = register(data_dir, 20)
    sent = [r for name in names for r in readings(name, 30)]
    if clock == "behind":  # a reading an hour ahead, as after the clock stepped back: each new one is newest + 1
        with open_storage(data_dir) as journal:
            add_readings(journal, names[0], [(time.time_ns() + 3600 * 10**9, 99, 99)])
    with ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_ACCESS_LOG="1"), args=WORKERS) as service:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda r: post(service, *r), sent))
        pids = worker_pids(service)
        log = service.log()
    assert statuses == [202] * len(sent)
    rows = [row for row in journal_rows(data_dir) if row[3] != 99]
    assert sorted((node, temperature) for _, _, node, temperature, _ in rows) == sorted(
        (name, float(data.split()[0])) for name, data in sent
    )  # each acknowledged reading exactly once
    stamps = [ts for _, ts, _, _, _ in rows]
    assert len(set(stamps)) == len(stamps), "two readings share a timestamp"
    assert stamps == sorted(stamps), "timestamps must increase in commit order, across workers"
    assert len(set(pids.values())) == 2
    by_worker = served_by(log)
    assert set(by_worker) == {"0", "1"} and sum(by_worker.values()) == len(sent), by_worker


def test_sigterm_with_requests_in_flight_stops_supervisor_and_workers_and_keeps_every_202(tmp_path):
    data_dir = tmp_path / "data"
    names = register(data_dir, 8)
    service = ServiceProcess(data_dir, args=WORKERS).start()
    pids = worker_pids(service)
    results: list[int] = []
    stop = threading.Event()

    def send(name):
        k = 0
        while not stop.is_set():
            try:
                results.append(post(service, name, f"{k % 800 / 10:.1f} 50"))
            except OSError:  # refused once the port is closed
                return
            k += 1

    with ThreadPoolExecutor(len(names)) as pool:
        for name in names:
            pool.submit(send, name)
        time.sleep(0.5)
        service.proc.send_signal(signal.SIGTERM)
        try:
            code = service.proc.wait(60)
        finally:
            stop.set()
    service._log.close()
    assert code == 0, service.log()[-4000:]
    assert set(results) <= {202, 503}, results
    assert results.count(202) > 0 and len(journal_rows(data_dir)) == results.count(202)
    assert not any(alive(pid) for pid in pids.values()), pids
    assert "all workers stopped" in service.log()


def test_a_killed_worker_is_started_again_and_the_port_keeps_answering(tmp_path):
    data_dir = tmp_path / "data"
    names = register(data_dir, 10)
    with ServiceProcess(data_dir, args=WORKERS) as service:
        pids = worker_pids(service)
        os.kill(pids[1], signal.SIGKILL)  # a child of the service this test started
        with ThreadPoolExecutor(8) as pool:  # at once: connections meant for worker 1 wait for its successor
            statuses = list(pool.map(lambda r: post(service, *r), [r for n in names for r in readings(n, 10)]))
        again = wait_for(lambda: (p := worker_pids(service)) and p[1] != pids[1] and p, "a new worker 1")
        assert again[0] == pids[0] and not alive(pids[1])
        log = service.log()
    assert statuses == [202] * 100
    assert len(journal_rows(data_dir)) == 100
    assert f"worker 1 (pid {pids[1]}) was killed by SIGKILL; starting it again" in log
    assert f"worker 1 started (pid {again[1]})" in log


def test_cli_changes_are_seen_by_every_worker(tmp_path):
    data_dir = tmp_path / "data"
    register(data_dir, 1)

    def statuses(password=PW):
        return {post(service, "n00", "20 50", password) for _ in range(12)}

    with ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_ACCESS_LOG="1"), args=WORKERS) as service:
        assert statuses() == {202}
        run_cli(data_dir, "halt", "n00")
        assert statuses() == {423}
        run_cli(data_dir, "resume", "n00")
        run_cli(data_dir, "halt")
        assert statuses() == {423}
        run_cli(data_dir, "resume")
        assert statuses() == {202}
        run_cli(data_dir, "node", "passwd", "n00", "--password", "new-" + PW)
        assert statuses() == {401}  # the old password, cached by both workers, no longer passes
        assert statuses("new-" + PW) == {202}
        run_cli(data_dir, "node", "remove", "n00")
        assert statuses("new-" + PW) == {401}
        log = service.log()
    assert set(served_by(log)) == {"0", "1"}


def test_the_login_guard_counts_per_worker(tmp_path):
    """Documented: an address may fail up to workers x TSWARM_AUTH_MAX_FAILURES times before every
    worker turns it away."""
    data_dir = tmp_path / "data"
    register(data_dir, 1)
    env = tswarm_env(data_dir, TSWARM_AUTH_MAX_FAILURES="3", TSWARM_AUTH_WINDOW="60")
    with ServiceProcess(data_dir, env=env, args=WORKERS) as service:
        failures = 0
        blocked_in_a_row = 0
        while blocked_in_a_row < 12:  # new connections land on either worker: 12 x 429 means both block
            status = post(service, "n00", "20 50", "guess")
            assert status in (401, 429)
            failures += status == 401
            blocked_in_a_row = blocked_in_a_row + 1 if status == 429 else 0
    assert 3 <= failures <= 2 * 3


def test_store_influxdb_forwards_every_reading_of_every_worker_once_from_one_forwarder(tmp_path, influxdb1_factory):
    server = influxdb1_factory()  # its own influxd: its write statistics are this test's alone
    data_dir, db = tmp_path / "data", "workers"
    names = register(data_dir, 10)
    sent = [r for name in names for r in readings(name, 20)]
    with ServiceProcess(data_dir, env=influx1_env(data_dir, server, db), args=WORKERS) as service:
        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(lambda r: post(service, *r), sent)) == [202] * len(sent)
        # A reading committed by another process than worker 0 (this test's own journal writer) is
        # forwarded promptly too: nothing in worker 0 wakes its forwarder but the commit itself.
        wait_for(lambda: healthz(service)["backlog"] == 0, "the backlog forwarded")
        started = time.monotonic()
        asyncio.run(_append_from_this_process(data_dir))
        wait_for(lambda: _count(server, db) == len(sent) + 1, "the last reading in InfluxDB", timeout=10)
        prompt = time.monotonic() - started
        forwarders = {w: "in_flight" in doc for w, doc in _healthz_by_worker(service).items()}
        log = service.log()
    assert prompt < 5, f"{prompt:.1f} s to forward a reading another process committed"
    stored = [(ts, node, t, h) for _, ts, node, t, h in journal_rows(data_dir)]
    in_influx = server.rows("SELECT node, temperature, humidity FROM climate", db)
    assert sorted(tuple(row) for row in in_influx) == sorted(stored)
    assert _points_written(server) == len(stored)  # each reading written once: no second forwarder
    assert forwarders == {0: True, 1: False}
    assert log.count("tswarm.forwarder: forwarding to") == 1


async def _append_from_this_process(data_dir) -> None:
    with open_storage(data_dir) as journal:
        node_id = journal.node_auth("n00").id
        writer = journal.writer()
    await writer.start()
    try:
        await writer.append(node_id, 12.5, 50.0)
    finally:
        await writer.close()


def _count(server, db) -> int:
    rows = server.rows("SELECT COUNT(temperature) FROM climate", db)
    return rows[0][1] if rows else 0


def _points_written(server) -> int:
    """Points InfluxDB accepted over HTTP since it started (SHOW STATS, module httpd)."""
    (result,) = server.query("SHOW STATS FOR 'httpd'")
    series = result["series"][0]
    return dict(zip(series["columns"], series["values"][0]))["pointsWrittenOK"]


def _healthz_by_worker(service) -> dict[int, dict]:
    docs: dict[int, dict] = {}
    while len(docs) < 2:
        doc = healthz(service)
        docs[doc["worker"]] = doc
    return docs


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_a_one_line_error(tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(tmp_path / "data", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", workers,
                       check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    # nothing announced: no "serving on", and the page's one-time link is kept for the start that serves
    assert not (tmp_path / "data" / "read-token").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_0_serves_on_the_port_the_kernel_chose_and_says_which(tmp_path, workers):
    data_dir = tmp_path / "data"
    proc = subprocess.Popen([*TSWARM, "serve", "--host", "127.0.0.1", "--port", "0", "--workers", workers],
                            env=tswarm_env(data_dir), stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("/?token=" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        port = int(re.search(r"serving on http://127\.0\.0\.1:(\d+),", "".join(lines)).group(1))
        assert port != 0 and f"http://127.0.0.1:{port}/?token=" in "".join(lines)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    assert json.load(resp)["ok"] is True
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        conf = json.loads(run_cli(data_dir, "node", "add", "n1").stdout)  # `node add` names that port too
        assert conf["url"].endswith(f":{port}/api/nodes/n1")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_data_dir_that_cannot_be_used_is_one_line_before_any_worker_starts(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("a file where the journal's folder should be")
    proc = subprocess.run(
        [*TSWARM, "serve", "--host", "127.0.0.1", "--port", "0", *WORKERS],
        env=tswarm_env(not_a_dir), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"Error: data dir {not_a_dir} is a file, not a folder (check --data-dir or TSWARM_DATA_DIR)"
    ]


BROKEN_WORKERS = """
import logging, sys
from tswarm import workers
from tswarm.settings import Config

def broken_app(config):
    raise RuntimeError("this worker cannot start")

workers.create_app = broken_app
logging.basicConfig(level="INFO")
sys.exit(workers.serve(Config(data_dir=sys.argv[1], host="127.0.0.1", port=0, workers=2)))
"""


def test_a_worker_that_cannot_start_stops_the_service_with_an_error(tmp_path):
    """Once the supervisor's own checks (address, data dir, journal) pass, nothing real makes a worker
    fail before it serves; so in a real supervisor process with real forked workers, the workers' app
    factory is replaced by one that raises."""
    started = time.monotonic()
    proc = subprocess.run([*TSWARM[:1], "-c", BROKEN_WORKERS, str(tmp_path / "data")],
                          env=tswarm_env(tmp_path / "data"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert re.search(r"worker \d \(pid \d+\) exited with status 1 before it could serve; stopping", proc.stderr)
    assert proc.stderr.count("starting it again") == 0 and time.monotonic() - started < 30


def test_workers_hold_the_data_dir_once_and_a_second_serve_is_refused(tmp_path):
    from tests.integration.test_serve import assert_refused_for, second_serve

    data_dir = tmp_path / "data"
    register(data_dir, 1)
    with ServiceProcess(data_dir, args=WORKERS) as service:
        pids = worker_pids(service)
        assert_refused_for(second_serve(data_dir), data_dir, service.proc.pid)  # the supervisor's pid
        assert_refused_for(second_serve(data_dir, *WORKERS), data_dir, service.proc.pid)
        locks = [line for line in open("/proc/locks") if f":{(data_dir / 'tswarm.lock').stat().st_ino} " in line]
        assert len(locks) == 1, locks  # one lock, shared by the supervisor and its workers
        assert {post(service, "n00", "20 50") for _ in range(6)} == {202}
        assert worker_pids(service) == pids
