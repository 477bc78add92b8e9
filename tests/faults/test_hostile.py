"""Slow and hostile clients: idle half-sent requests and a flood of bad credentials do not stop
valid nodes from being served; the flooding address is answered 429 for a while. A client that
hangs up mid-body is a 499 and one log line; a gzip bomb is a 413 that is never inflated whole."""
import base64
import http.client
import json
import socket
import threading
import time
import urllib.request
import zlib

import pytest

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


def _metric(url: str, line: str) -> bool:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return line in resp.read().decode()


def _wait_for_metric(url: str, line: str) -> None:
    deadline = time.monotonic() + 30
    while not _metric(url, line):
        if time.monotonic() > deadline:
            raise AssertionError(f"{line!r} never appeared in /metrics")
        time.sleep(0.05)


HANG_UPS = {
    "Content-Length": (b"Content-Length: 100\r\n", b'{"name": "n'),  # 10 of 100 bytes, then gone
    "chunked": (b"Transfer-Encoding: chunked\r\n", b"14\r\n{\"name\": \"n"),  # 11 of a 20-byte chunk
}


@pytest.mark.parametrize("access_log", ["0", "1"], ids=["access-log-off", "access-log-on"])
@pytest.mark.parametrize("framing, sent", HANG_UPS.values(), ids=HANG_UPS.keys())
def test_a_client_that_hangs_up_mid_body_is_a_499_and_one_log_line(tmp_path, framing, sent, access_log):
    """A node on bad Wi-Fi: the headers arrive, then part of the body, then the connection drops. One
    line says so: the access log's when it is on, else the service's own (service/errors.py)."""
    data_dir = tmp_path / "data"
    register(data_dir, 1)
    auth = base64.b64encode(f"n000:{PASSWORD}".encode())
    env = tswarm_env(data_dir, TSWARM_LOG_LEVEL="INFO", TSWARM_ACCESS_LOG=access_log)
    with ServiceProcess(data_dir, env=env) as service:
        before = len(service.log().splitlines())
        with socket.create_connection(("127.0.0.1", service.port)) as s:
            s.sendall(b"PUT /api/nodes/n000 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n"
                      + b"Content-Type: application/json\r\n" + framing + b"\r\n" + sent)
        _wait_for_metric(service.url, 'tswarm_http_requests_total{route="/api/nodes/{name}",status="499"} 1.0')
        assert not _metric(service.url, 'status="500"')
        lines = [line for line in service.log().splitlines()[before:] if not ("GET /metrics" in line or "GET /healthz" in line)]
    print(f"hang-up ({framing.decode().split(':')[0]}): {lines}")
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert " INFO " in lines[0] and '"PUT /api/nodes/n000 HTTP/1.1" 499' in lines[0]


def test_a_chunked_gzip_bomb_gets_413_and_the_service_does_not_inflate_it(tmp_path):
    """256 MiB of zeros in 255 KiB of gzip, sent chunked (no length to refuse up front): the node route
    stops at the body limit after decompression; the rest is inflated and dropped piece by piece."""
    data_dir = tmp_path / "data"
    register(data_dir, 1)
    auth = base64.b64encode(f"n000:{PASSWORD}".encode())
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(256)) + packer.flush()
    with ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_LOG_LEVEL="INFO")) as service:
        peak_before = _peak_rss_kib(service.proc.pid)
        with socket.create_connection(("127.0.0.1", service.port), timeout=30) as s:
            s.sendall(b"PUT /api/nodes/n000 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n"
                      b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for i in range(0, len(bomb), 16384):
                    piece = bomb[i:i + 16384]
                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the service answered and closed before the whole bomb was sent
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        _wait_for_metric(service.url, 'tswarm_http_requests_total{route="/api/nodes/{name}",status="413"} 1.0')
        growth_mib = (_peak_rss_kib(service.proc.pid) - peak_before) / 1024
    print(f"gzip bomb: {len(bomb)} bytes of gzip for 256 MiB; answer {answer.split(b' ')[1].decode()}, "
          f"peak memory grew {growth_mib:.1f} MiB")
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"error": "too_large"' in answer
    assert growth_mib < 64


def _peak_rss_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmHWM:")[1].split()[0])
