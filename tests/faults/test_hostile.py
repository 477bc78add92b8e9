"""Slow and hostile clients: idle half-sent requests and a flood of bad credentials do not stop
valid nodes from being served; the flooding address is answered 429 for a while."""
import base64
import http.client
import json
import socket
import threading
import time

from tests.servers import ServiceProcess, tswarm_env

from .test_crash import PASSWORD, register

SLOW_CONNECTIONS = 300


def send(port, source, name, password):
    conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0), timeout=30)
    auth = base64.b64encode(f"{name}:{password}".encode()).decode()
    conn.request("PUT", f"/api/nodes/{name}", json.dumps({"name": name, "data": "21.5 40"}), {"Authorization": "Basic " + auth})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_slowloris_and_a_credential_flood_do_not_stop_valid_nodes(tmp_path):
    data_dir = tmp_path / "data"
    names = register(data_dir, 20)
    env = tswarm_env(data_dir, TSWARM_LOG_LEVEL="WARNING", TSWARM_AUTH_MAX_FAILURES="20", TSWARM_AUTH_WINDOW="60")
    with ServiceProcess(data_dir, env=env) as service:
        slow = []
        for i in range(SLOW_CONNECTIONS):  # half-sent requests, kept open and trickling
            s = socket.create_connection(("127.0.0.1", service.port), source_address=("127.0.0.4", 0))
            s.sendall(b"PUT /api/nodes/n000 HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        stop = threading.Event()
        flood = {"sent": 0, 401: 0, 429: 0, "other": 0}

        def flooder():
            while not stop.is_set():
                status = send(service.port, "127.0.0.2", names[flood["sent"] % len(names)], "guess-%d" % flood["sent"])
                flood["sent"] += 1
                flood[status if status in (401, 429) else "other"] += 1

        flooders = [threading.Thread(target=flooder) for _ in range(4)]
        for t in flooders:
            t.start()
        try:
            valid = []
            for round_ in range(5):
                for s in slow:
                    s.sendall(b"X-Trickle: 1\r\n")
                valid += [send(service.port, "127.0.0.3", name, PASSWORD) for name in names]
                time.sleep(0.2)
        finally:
            stop.set()
            for t in flooders:
                t.join(30)
            for s in slow:
                s.close()
    print(f"hostile clients: {SLOW_CONNECTIONS} slow connections, {flood['sent']} bad-credential requests "
          f"({flood[401]} x 401, {flood[429]} x 429, {flood['other']} other), valid nodes {valid.count(202)}/{len(valid)} x 202")
    assert valid == [202] * len(valid)
    assert flood[429] > 0 and flood["other"] == 0
    assert flood[401] <= 20 + 4  # the guard stopped the guessing after 20 failures (4 already in flight)
