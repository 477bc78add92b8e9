"""The real `tswarm serve` process driven over HTTP, with the real CLI beside it on the same data dir."""
import base64
import http.client
import json
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers import TSWARM, ServiceProcess, add_node, free_port, request, run_cli, tswarm_env

PW = "correct horse battery"


def put(service, name, data, password=PW, method="PUT", login=None):
    headers = {"Authorization": " Basic %s" % base64.b64encode(f"{login or name}:{password}".encode()).decode(),
               "Content-Type": "application/json"}
    return request(method, f"{service.url}/api/nodes/{name}", json.dumps({"name": name, "data": data}), headers)


def export_rows(data_dir, *args):
    out = run_cli(data_dir, "export", *args).stdout
    return out.splitlines()


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def service(data_dir):
    with ServiceProcess(data_dir) as svc:
        yield svc


def test_first_boot_405_then_post_then_put_as_the_seed_firmware_does(service, data_dir):
    svconf = add_node(data_dir, "kitchen", PW)
    assert svconf["login"] == "kitchen"
    assert base64.b64decode(svconf["xauth"]).decode() == f"kitchen:{PW}"
    headers = {"Authorization": " Basic %s" % svconf["xauth"], "Content-Type": "application/json"}
    url = f"{service.url}/api/nodes/kitchen"
    payload = json.dumps({"name": "kitchen", "data": "23.4 45.1"})
    status, hdrs, _ = request("PUT", url, payload, headers)
    assert (status, hdrs["Allow"]) == (405, "POST")
    assert request("POST", url, payload, headers)[0] == 202
    assert request("PUT", url + "/", json.dumps({"name": "kitchen", "data": "-3.2 80.0"}), headers)[0] == 202
    rows = export_rows(data_dir)
    assert rows[0] == "time,node,temperature,humidity,vbat,rssi,awake_ms,lost"
    assert [r.split(",", 1)[1] for r in rows[1:]] == ["kitchen,23.4,45.1,,,,", "kitchen,-3.2,80.0,,,,"]


def test_svconf_url_comes_from_the_public_url(data_dir):
    env = tswarm_env(data_dir, TSWARM_PUBLIC_URL="https://swarm.example.org/")
    svconf = add_node(data_dir, "attic", PW, env=env)
    assert svconf["url"] == "https://swarm.example.org/api/nodes/attic"
    assert svconf["url_local"].startswith("http://") and svconf["url_local"].endswith(":8080/api/nodes/attic")


def test_sigkill_right_after_a_202_loses_nothing(data_dir):
    add_node(data_dir, "n1", PW)
    service = ServiceProcess(data_dir).start()
    assert put(service, "n1", "21 40", method="POST")[0] == 202
    acked = []
    for i in range(20):
        status = put(service, "n1", f"{20 + i / 10:.1f} 50")[0]
        assert status == 202
        acked.append(f"n1,{20 + i / 10:.1f},50.0,,,,")
    service.kill(signal.SIGKILL)
    assert service.proc.returncode == -signal.SIGKILL
    rows = [r.split(",", 1)[1] for r in export_rows(data_dir)[1:]]
    assert rows == ["n1,21.0,40.0,,,,"] + acked
    with ServiceProcess(data_dir, log_path=service.log_path) as again:  # and the service comes back on the same journal
        assert put(again, "n1", "22 41")[0] == 202
    assert len(export_rows(data_dir)) == 1 + 22
    check = subprocess.run(["sqlite3", str(data_dir / "tswarm.db"), "PRAGMA integrity_check"], capture_output=True, text=True)
    assert check.stdout.strip() == "ok"


def test_sigterm_finishes_in_flight_requests_and_commits_before_exit(data_dir):
    add_node(data_dir, "n1", PW)
    service = ServiceProcess(data_dir, env=tswarm_env(data_dir, PYTHONFAULTHANDLER="1")).start()
    assert put(service, "n1", "20 50", method="POST")[0] == 202
    results = []
    stop = threading.Event()

    def send():
        while not stop.is_set():
            try:
                results.append(put(service, "n1", "21 51")[0])
            except OSError:
                return

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(send)
        time.sleep(0.5)
        service.proc.send_signal(signal.SIGTERM)
        try:
            code = service.proc.wait(60)
        except subprocess.TimeoutExpired:
            service.proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            service.proc.wait(30)
            pytest.fail("tswarm serve did not exit after SIGTERM:\n" + service.log()[-8000:])
        finally:
            stop.set()
    service._log.close()
    assert code == 0
    assert set(results) <= {202, 503}, results
    accepted = 1 + results.count(202)
    assert len(export_rows(data_dir)) - 1 == accepted


def test_cli_changes_are_seen_by_the_running_server_on_the_next_request(service, data_dir):
    assert put(service, "n1", "20 50", method="POST")[0] == 401
    add_node(data_dir, "n1", PW)
    assert put(service, "n1", "20 50", method="POST")[0] == 202
    run_cli(data_dir, "halt", "n1")
    assert put(service, "n1", "20 50")[0] == 423
    run_cli(data_dir, "resume", "n1")
    assert put(service, "n1", "20 50")[0] == 202
    run_cli(data_dir, "halt")
    assert put(service, "n1", "20 50")[0] == 423
    run_cli(data_dir, "resume")
    assert put(service, "n1", "20 50")[0] == 202
    run_cli(data_dir, "node", "remove", "n1")
    assert put(service, "n1", "20 50")[0] == 401
    assert len(export_rows(data_dir)) - 1 == 5  # 423s stored their readings too


def test_tswarm_halt_env_halts_every_node(data_dir):
    add_node(data_dir, "n1", PW)
    env = tswarm_env(data_dir, TSWARM_HALT="1")
    with ServiceProcess(data_dir, env=env) as service:
        status, _, raw = put(service, "n1", "20 50", method="POST")
    assert status == 423 and json.loads(raw)["error"] == "halted"
    assert len(export_rows(data_dir)) == 2


def test_port_env_wins_over_the_port_flag(data_dir, tmp_path):
    port = free_port()
    env = tswarm_env(data_dir, PORT=str(port))
    proc = subprocess.Popen(
        [*TSWARM, "serve", "--host", "127.0.0.1", "--port", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                status, _, raw = request("GET", f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        assert status == 200 and json.loads(raw)["ok"] is True
    finally:
        proc.terminate()
        proc.wait(30)


def test_failed_logins_from_one_address_get_429_others_are_served(data_dir):
    add_node(data_dir, "n1", PW)
    add_node(data_dir, "n2", PW)
    env = tswarm_env(data_dir, TSWARM_AUTH_MAX_FAILURES="5", TSWARM_AUTH_WINDOW="60")
    with ServiceProcess(data_dir, env=env) as service:
        assert put(service, "n1", "20 50", method="POST")[0] == 202

        def from_address(source, login, password):
            conn = http.client.HTTPConnection("127.0.0.1", service.port, source_address=(source, 0), timeout=30)
            auth = base64.b64encode(f"{login}:{password}".encode()).decode()
            conn.request("POST", f"/api/nodes/{login}", json.dumps({"name": login, "data": "20 50"}),
                         {"Authorization": "Basic " + auth})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status, resp.getheader("Retry-After")

        assert [from_address("127.0.0.2", "n1", "guess")[0] for _ in range(5)] == [401] * 5
        status, retry_after = from_address("127.0.0.2", "n2", PW)  # even right credentials wait: no guessing
        assert status == 429 and 0 < int(retry_after) <= 60
        assert from_address("127.0.0.2", "n1", "guess")[0] == 429
        assert from_address("127.0.0.2", "n1", PW) == (202, None)  # a header that verified before still passes
        assert from_address("127.0.0.3", "n2", PW) == (202, None)  # other addresses are unaffected


# -- one data dir, one service -------------------------------------------------------------------


def second_serve(data_dir, *args):
    """`tswarm serve` on ``data_dir`` and another free port, expected to be refused at once."""
    return subprocess.run(
        [*TSWARM, "serve", "--host", "127.0.0.1", "--port", str(free_port()), *args],
        env=tswarm_env(data_dir), capture_output=True, text=True, timeout=60,
    )


def assert_refused_for(proc, data_dir, pid):
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: data dir {data_dir} is in use by another tswarm serve (pid {pid}): one service per data dir;"
        " stop that one first, or give this one its own --data-dir"
    ]


def test_a_second_serve_on_a_held_data_dir_is_refused_and_the_first_keeps_serving(service, data_dir):
    add_node(data_dir, "n1", PW)
    assert put(service, "n1", "20 50", method="POST")[0] == 202
    assert_refused_for(second_serve(data_dir), data_dir, service.proc.pid)
    assert put(service, "n1", "21 51")[0] == 202
    assert len(export_rows(data_dir)) - 1 == 2


def test_after_kill_9_the_kernel_frees_the_data_dir_for_the_next_serve(data_dir):
    add_node(data_dir, "n1", PW)
    first = ServiceProcess(data_dir).start()
    assert second_serve(data_dir).returncode == 1
    first.kill(signal.SIGKILL)  # no clean-up runs: the lock file stays, its lock does not
    assert (data_dir / "tswarm.lock").read_text().split()[0] == str(first.proc.pid)  # then its port
    with ServiceProcess(data_dir, log_path=first.log_path) as again:
        assert put(again, "n1", "20 50", method="POST")[0] == 202
        assert (data_dir / "tswarm.lock").read_text().split()[0] == str(again.proc.pid)


def test_every_other_command_works_while_a_service_holds_the_data_dir(service, data_dir):
    add_node(data_dir, "n1", PW)
    assert put(service, "n1", "20 50", method="POST")[0] == 202
    run_cli(data_dir, "node", "add", "n2", "--password", PW)
    run_cli(data_dir, "halt", "n2")
    assert json.loads(run_cli(data_dir, "node", "list", "--json").stdout)[1]["halted"] is True
    assert json.loads(run_cli(data_dir, "status", "--json").stdout)["store"] == "sqlite"
    assert len(export_rows(data_dir)) == 2
    assert put(service, "n2", "22 52", method="POST")[0] == 423


def test_a_refused_serve_changes_nothing_in_the_data_dir(service, data_dir):
    before = {p.name for p in data_dir.iterdir()}
    held = (data_dir / "tswarm.lock").read_text()
    assert second_serve(data_dir).returncode == 1
    assert {p.name for p in data_dir.iterdir()} == before and (data_dir / "tswarm.lock").read_text() == held
