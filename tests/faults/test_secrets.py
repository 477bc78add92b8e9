"""Secrets: after driving the service through its success and error paths with DEBUG logging, its
log and every error body hold no password, no xauth value and no token; credentials at rest are
scrypt hashes only."""
import base64
import json
import sqlite3

from tswarm import auth
from tests.servers import ServiceProcess, add_node, request, run_cli, tswarm_env

PASSWORD = "Sup3r-Secret-Node-Password"
ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"
API_PASSWORD = "Api-Given-Password-987"


def test_no_secret_in_logs_error_bodies_or_at_rest(tmp_path):
    data_dir = tmp_path / "data"
    env = tswarm_env(data_dir, TSWARM_LOG_LEVEL="DEBUG", TSWARM_ADMIN_TOKEN=ADMIN, TSWARM_READ_TOKEN=READER)
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

    with sqlite3.connect(data_dir / "tswarm.db") as conn:
        hashes = [h for (h,) in conn.execute("SELECT password_hash FROM nodes")]
    assert len(hashes) == 2 and all(h.startswith(f"scrypt${auth.SCRYPT_N}$8$1$") for h in hashes)
    at_rest = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
    for secret in secrets:
        assert secret.encode() not in at_rest
