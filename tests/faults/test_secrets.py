"""Secrets: after driving the service through its success and error paths with DEBUG logging, its
log and every error body hold no password, no xauth value and no token; credentials at rest are
scrypt hashes only. Malformed requests, which aiohttp answers before the app, leak none either."""
import base64
import json
import re
import socket
import time

import pytest

from tswarm import auth
from tswarm.storage import open_storage
from tests.conftest import nodes_table
from tests.servers import ServiceProcess, add_node, request, run_cli, tswarm_env

PASSWORD = "Sup3r-Secret-Node-Password"
ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"
API_PASSWORD = "Api-Given-Password-987"


def test_no_secret_in_logs_error_bodies_or_at_rest(tmp_path):
    data_dir = tmp_path / "data"
    env = tswarm_env(data_dir, TSWARM_LOG_LEVEL="DEBUG", TSWARM_ACCESS_LOG="1", TSWARM_ADMIN_TOKEN=ADMIN, TSWARM_READ_TOKEN=READER)
    svconf = add_node(data_dir, "n1", PASSWORD, env=env)
    xauth = svconf["xauth"]
    error_bodies = []
    with ServiceProcess(data_dir, env=env) as service:
        url = service.url

        def call(method, path, body=None, headers=None):
            status, _, raw = request(method, url + path, body, headers or {})
            if status >= 400:
                error_bodies.append(raw.decode(errors="replace"))
            return status, raw

        node = lambda pw=PASSWORD, login="n1": {"Authorization": " Basic " + base64.b64encode(f"{login}:{pw}".encode()).decode()}  # noqa: E731
        reading = json.dumps({"name": "n1", "data": "21.5 40"})
        assert call("PUT", "/api/nodes/n1", reading, node())[0] == 405
        assert call("POST", "/api/nodes/n1", reading, node())[0] == 202
        assert call("PUT", "/api/nodes/n1", reading, node(PASSWORD + "x"))[0] == 401
        assert call("PUT", "/api/nodes/n1", reading, node(login="n2"))[0] == 401
        assert call("PUT", "/api/nodes/n1", "not json", node())[0] == 400
        assert call("PUT", "/api/nodes/n1", json.dumps({"name": "n1", "data": f"{PASSWORD} 1"}), node())[0] == 400
        assert call("PUT", "/api/nodes/n1", reading, {"Authorization": f"Bearer {ADMIN}"})[0] == 401
        assert call("GET", "/api/readings", headers={"Authorization": f"Bearer {READER}x"})[0] == 401
        assert call("GET", "/api/readings", headers=node())[0] == 403
        assert call("GET", "/api/readings", headers={"Authorization": f"Bearer {READER}"})[0] == 200
        assert call("POST", "/api/admin/nodes", json.dumps({"name": "n2", "password": API_PASSWORD}),
                    {"Authorization": f"Bearer {ADMIN}x"})[0] == 401
        status, raw = call("POST", "/api/admin/nodes", json.dumps({"name": "n2", "password": API_PASSWORD}),
                           {"Authorization": f"Bearer {ADMIN}"})
        assert status in (200, 201)
        api_xauth = json.loads(raw)["xauth"]
        assert call("POST", "/api/admin/nodes", json.dumps({"name": "n2", "password": API_PASSWORD}),
                    {"Authorization": f"Bearer {ADMIN}"})[0] == 409
        assert call("GET", "/metrics")[0] == 200
        log = service.log()
    run_cli(data_dir, "node", "list", env=env)

    secrets = [PASSWORD, xauth, ADMIN, READER, API_PASSWORD, api_xauth]
    leaks = [(s, where) for s in secrets for where, text in [("log", log)] + [("body", b) for b in error_bodies] if s in text]
    print(f"secrets: {len(log.splitlines())} log lines, {len(error_bodies)} error bodies, {len(leaks)} leaks")
    assert leaks == []
    assert len(error_bodies) >= 8 and "PUT /api/nodes/n1" in log  # the log did record the requests

    with open_storage(data_dir) as journal:
        hashes = [password_hash for _, password_hash in nodes_table(journal)]
    assert len(hashes) == 2 and all(h.startswith(f"scrypt${auth.SCRYPT_N}$8$1$") for h in hashes)
    at_rest = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
    for secret in secrets:
        assert secret.encode() not in at_rest


def _exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes, return what comes back: one whole answer, or what arrived before the service
    closed or went quiet (HTTP/0.9 and a body cut short get no answer)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            while chunk := s.recv(65536):
                out += chunk
                head, sep, body = out.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if sep and length and len(body) >= int(length.group(1)):
                    break
        except OSError:  # the service closed while we sent, or stayed quiet
            pass
    return out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_malformed_requests_put_no_secret_in_the_log_or_an_answer(tmp_path, workers):
    """Each request carries a node's password (Basic, in the URL, in other headers, in the body), the
    admin and read tokens (Bearer, query, cookie) and the node's xauth, and is broken in one way."""
    data_dir = tmp_path / "data"
    env = tswarm_env(data_dir, TSWARM_LOG_LEVEL="DEBUG", TSWARM_ACCESS_LOG="1", TSWARM_ADMIN_TOKEN=ADMIN, TSWARM_READ_TOKEN=READER)
    xauth = add_node(data_dir, "n1", PASSWORD, env=env)["xauth"]
    body = json.dumps({"name": "n1", "data": "21.5 40", "password": PASSWORD, "token": ADMIN}).encode()
    target = f"/api/nodes/n1?token={READER}&password={PASSWORD}&xauth={xauth}".encode()
    headers = (b"Host: x\r\nAuthorization: Basic " + xauth.encode() + b"\r\nX-Admin: Bearer " + ADMIN.encode()
               + b"\r\nCookie: token=" + READER.encode() + b"\r\nX-Password: " + PASSWORD.encode() + b"\r\n")
    sized = b"Content-Length: %d\r\n" % len(body)
    good = b"PUT " + target + b" HTTP/1.1\r\n" + headers
    cases = {
        "bad request line": b"PUT " + target + b" HTTP/1.1 extra\r\n" + headers + b"\r\n",
        "bad method": b"P@T " + target + b" HTTP/1.1\r\n" + headers + b"\r\n",
        "bad version": b"PUT " + target + b" HTTP/9." + PASSWORD.encode() + b"\r\n" + headers + b"\r\n",
        "HTTP/0.9": b"GET " + target + b"\r\n",
        "header without colon": good + PASSWORD.encode() + b"\r\n" + sized + b"\r\n" + body,
        "invalid header value": good + b"X-Bad: " + ADMIN.encode() + b"\x01\r\n" + sized + b"\r\n" + body,
        "invalid Authorization value": b"PUT " + target + b" HTTP/1.1\r\nAuthorization: Basic " + xauth.encode()
        + b"\x00\r\n" + sized + b"\r\n" + body,
        "non-ASCII header name": good + "Pässword: ".encode() + PASSWORD.encode() + b"\r\n\r\n",
        "huge header": good + b"X-Huge: " + (PASSWORD.encode() + b" ") * 1000 + b"\r\n\r\n",
        "huge URL": b"PUT " + target * 100 + b" HTTP/1.1\r\n" + headers + b"\r\n",
        "too many headers": good + b"X-Pw: " + PASSWORD.encode() + b"\r\n" * 1 + b"".join(
            b"X-%d: %s\r\n" % (i, ADMIN.encode()) for i in range(200)) + b"\r\n",
        "invalid chunked encoding": good + b"Transfer-Encoding: chunked\r\n\r\n" + PASSWORD.encode() + b"\r\n"
        + body + b"\r\n0\r\n\r\n",
        "chunk longer than said": good + b"Transfer-Encoding: chunked\r\n\r\n5\r\n" + body + b"\r\n0\r\n\r\n",
        "two Content-Lengths": good + sized + b"Content-Length: 1\r\n\r\n" + body,
        "gzip that is not": good + b"Content-Encoding: gzip\r\n" + sized + b"\r\n" + body,
        "brotli": good + b"Content-Encoding: br\r\n" + sized + b"\r\n" + body,
        "unknown encoding": good + b"Content-Encoding: " + PASSWORD.encode() + b"\r\n" + sized + b"\r\n" + body,
        "unknown Expect": good + b"Expect: " + ADMIN.encode() + b"\r\n" + sized + b"\r\n" + body,
        "body cut short": good + b"Content-Length: 1000\r\n\r\n" + body,
        "TLS on the HTTP port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + target + headers,
        "admin token, bad line": b"POST /api/admin/nodes HTTP/1.1\r\nAuthorization: Bearer " + ADMIN.encode()
        + b"\r\n" + b"Bad Header: " + READER.encode() + b"\r\n\r\n",
    }
    answers = {}
    with ServiceProcess(data_dir, env=env, args=("--workers", workers)) as service:
        for name, data in cases.items():
            answers[name] = _exchange(service.port, data)
        # well-formed requests with a token in the query or the Referer: the access log masks them
        for path in (f"/?token={READER}", f"/api/readings?token={READER}", f"/api/nodes?x=1&token={ADMIN}"):
            request("GET", service.url + path, headers={"Referer": service.url + path, "User-Agent": PASSWORD})
        time.sleep(0.5)  # let the workers write their last lines
        log = service.log()

    secrets = [PASSWORD, ADMIN, READER, xauth]
    secrets += [base64.b64encode(s.encode()).decode() for s in secrets]
    leaks = [(s, where) for s in secrets for where, text in [("log", log), *answers.items()]
             if s in (text if isinstance(text, str) else text.decode("latin-1"))]
    print(f"malformed requests (--workers {workers}): {len(cases)} sent, {len(log.splitlines())} log lines, "
          f"{len(leaks)} leaks")
    assert leaks == []
    assert "Traceback" not in log and " ERROR " not in log, log
    for name, out in answers.items():
        if out:  # every answer that came is JSON
            head, _, payload = out.partition(b"\r\n\r\n")
            assert b"application/json" in head, (name, out)
            assert json.loads(payload)["error"] in ("bad_request", "bad_encoding", "expectation_failed", "bad_body"), (name, out)
    assert sum(1 for out in answers.values() if out) >= len(cases) - 3  # HTTP/0.9, cut short and TLS may go unanswered
    assert "token=***" in log  # the access log did record the well-formed ones
