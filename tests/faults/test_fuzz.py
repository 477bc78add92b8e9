"""Fuzz: hypothesis generates methods, paths, headers and bodies against the running service:
never a 5xx, and nothing stored unless the service answered 202 or 423."""
import base64
import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.servers import ServiceProcess, tswarm_env
from tswarm.storage import open_storage

from .test_crash import PASSWORD, register

VALID_AUTH = "Basic " + base64.b64encode(f"n000:{PASSWORD}".encode()).decode()

methods = st.sampled_from(["PUT", "POST", "GET", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"])
names = st.one_of(st.sampled_from(["n000", "n001", "ghost", "..", "%2e%2e%2f", "a%00b", "x" * 80]),
                  st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/?#%"), min_size=1, max_size=20))
paths = st.one_of(
    names.map(lambda n: f"/api/nodes/{n}"),
    names.map(lambda n: f"/api/nodes/{n}/"),
    st.sampled_from(["/", "/healthz", "/metrics", "/api/nodes", "/api/readings?format=xml", "/api/readings?start=x", "/nope"]),
)
auths = st.one_of(
    st.just(VALID_AUTH), st.just(" " + VALID_AUTH), st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
)
datas = st.one_of(
    st.text(max_size=30),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats()).map(lambda v: f"{v[0]} {v[1]}"),
    st.tuples(st.integers(-100, 200), st.integers(-10, 150)).map(lambda v: f"{v[0]} {v[1]}"),
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, d: json.dumps({"name": n, "data": d}).encode(), st.sampled_from(["n000", "n001", ""]), datas),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    register(data_dir, 2)
    env = tswarm_env(data_dir, TSWARM_LOG_LEVEL="WARNING", TSWARM_AUTH_MAX_FAILURES="1000000")
    with ServiceProcess(data_dir, env=env) as svc:
        svc.answers = {"tried": 0, "5xx": 0, "stored_answers": 0}
        yield svc


valid_bodies = st.tuples(st.integers(-400, 800), st.integers(0, 1000)).map(
    lambda v: json.dumps({"name": "n000", "data": f"{v[0] / 10} {v[1] / 10}"}).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.one_of(methods, st.just("PUT")), path=st.one_of(paths, st.just("/api/nodes/n000")),
       auth=st.one_of(auths, st.just(VALID_AUTH)), body=st.one_of(bodies, valid_bodies), content_type=st.sampled_from([None, "application/json", "text/plain"]))
def test_fuzzed_requests_never_get_5xx_and_store_only_what_was_acknowledged(service, method, path, auth, body, content_type):
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if content_type:
        headers["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    try:
        conn.request(method, path, body=body if method not in ("GET", "HEAD") else None, headers=headers)
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    service.answers["tried"] += 1
    service.answers["5xx"] += resp.status >= 500
    assert resp.status < 500, (method, path, headers, body, resp.status)
    if resp.status in (202, 423):
        service.answers["stored_answers"] += 1
    with open_storage(service.data_dir) as journal:
        assert journal.count_readings() == service.answers["stored_answers"]


def test_fuzz_figures(service):
    """Runs after the fuzz test in this module: it reached the store, so acceptance was exercised too."""
    assert service.answers["tried"] >= 400 and service.answers["stored_answers"] > 0
    print(f"fuzz: {service.answers['tried']} requests, {service.answers['5xx']} 5xx, "
          f"{service.answers['stored_answers']} stored (each answered 202/423)")
