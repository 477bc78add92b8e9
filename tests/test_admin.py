"""Admin over HTTP (Bearer TSWARM_ADMIN_TOKEN): the CLI's node, halt and resume commands."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tswarm import auth

from .conftest import TEST_SCRYPT_N, register, write_lock_held

pytestmark = pytest.mark.engines

PW = "secret-pw"
READ, ADMIN = "read-token-0123456789", "admin-token-0123456789"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def admin(make_client):
    return await make_client(read_token=READ, admin_token=ADMIN)


async def post_reading(client, name, password):
    return await client.post(
        f"/api/nodes/{name}", data=json.dumps({"name": name, "data": "20 50"}),
        headers={"Authorization": " Basic " + auth.xauth(name, password), "Content-Type": "application/json"},
    )


async def test_add_node_returns_svconf_the_node_can_post_with(admin, journal):
    resp = await admin.post("/api/admin/nodes", json={"name": "porch", "password": "pw-porch-123"}, headers=AS_ADMIN)
    assert resp.status == 201
    conf = await resp.json()
    assert set(conf) == {"url", "url_local", "login", "xauth"}
    assert conf["login"] == "porch" and conf["url"].endswith("/api/nodes/porch")
    assert base64.b64decode(conf["xauth"]).decode() == "porch:pw-porch-123"
    assert journal.is_registered("porch")
    posted = await admin.post(
        "/api/nodes/porch", data=json.dumps({"name": "porch", "data": "20 50"}),
        headers={"Authorization": " Basic " + conf["xauth"]},
    )
    assert posted.status == 202


async def test_add_node_generates_a_password_and_refuses_duplicates_and_bad_names(admin):
    resp = await admin.post("/api/admin/nodes", json={"name": "shed"}, headers=AS_ADMIN)
    assert resp.status == 201
    login, password = base64.b64decode((await resp.json())["xauth"]).decode().split(":", 1)
    assert login == "shed" and len(password) >= 20
    again = await admin.post("/api/admin/nodes", json={"name": "shed"}, headers=AS_ADMIN)
    assert (again.status, (await again.json())["error"]) == (409, "node_exists")
    for body in ({"name": "no/slash"}, {}, {"name": "ok", "password": ""}, ["shed"]):
        resp = await admin.post("/api/admin/nodes", json=body, headers=AS_ADMIN)
        assert (resp.status, (await resp.json())["error"]) == (400, "bad_request"), body
    resp = await admin.post("/api/admin/nodes", data="{not json", headers=AS_ADMIN)
    assert resp.status == 400


async def test_a_generated_password_gets_the_cheap_hash_and_a_given_one_the_configured_scrypt(admin, journal):
    def stored_n(name):
        return int(journal.node_auth(name).password_hash.split("$")[1])

    assert (await admin.post("/api/admin/nodes", json={"name": "gen"}, headers=AS_ADMIN)).status == 201
    assert (await admin.post("/api/admin/nodes", json={"name": "own", "password": "pw-own-123"}, headers=AS_ADMIN)).status == 201
    assert (stored_n("gen"), stored_n("own")) == (auth.SCRYPT_N_GENERATED, TEST_SCRYPT_N)


async def test_new_password_replaces_the_old_one(admin, journal):
    register(journal, "n1", PW, created=True)
    assert (await post_reading(admin, "n1", PW)).status == 202  # remembered in the credential cache
    resp = await admin.post("/api/admin/nodes/n1/password", json={"password": "new-pw-456"}, headers=AS_ADMIN)
    assert resp.status == 200
    assert base64.b64decode((await resp.json())["xauth"]).decode() == "n1:new-pw-456"
    assert (await post_reading(admin, "n1", PW)).status == 401
    assert (await post_reading(admin, "n1", "new-pw-456")).status == 202


async def test_remove_node_revokes_its_credentials(admin, journal):
    register(journal, "n1", PW, created=True)
    assert (await post_reading(admin, "n1", PW)).status == 202
    resp = await admin.delete("/api/admin/nodes/n1", headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (200, {"removed": "n1"})
    assert not journal.is_registered("n1")
    assert (await post_reading(admin, "n1", PW)).status == 401
    resp = await admin.delete("/api/admin/nodes/n1", headers=AS_ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (404, "unknown_node")


async def test_halt_and_resume_one_node_or_all(admin, journal):
    register(journal, "n1", PW, created=True)
    register(journal, "n2", PW, created=True)
    resp = await admin.post("/api/admin/nodes/n1/halt", headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (200, {"node": "n1", "halted": True})
    assert [(await post_reading(admin, n, PW)).status for n in ("n1", "n2")] == [423, 202]
    assert (await admin.post("/api/admin/nodes/n1/resume", headers=AS_ADMIN)).status == 200
    assert (await admin.post("/api/admin/halt", headers=AS_ADMIN)).status == 200
    assert journal.halted_all()
    assert [(await post_reading(admin, n, PW)).status for n in ("n1", "n2")] == [423, 423]
    resp = await admin.post("/api/admin/resume", headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (200, {"node": None, "halted": False})
    assert [(await post_reading(admin, n, PW)).status for n in ("n1", "n2")] == [202, 202]
    resp = await admin.post("/api/admin/nodes/ghost/halt", headers=AS_ADMIN)
    assert resp.status == 404


async def test_set_interval(admin, journal):
    register(journal, "n1", PW, created=True)
    resp = await admin.put("/api/admin/nodes/n1/interval", json={"interval_s": 900}, headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (200, {"node": "n1", "interval_s": 900})
    assert journal.list_nodes()[0].interval_s == 900
    for bad in ({"interval_s": 0}, {"interval_s": "600"}, {"interval_s": 5.5}, {"interval_s": True}, {}):
        resp = await admin.put("/api/admin/nodes/n1/interval", json=bad, headers=AS_ADMIN)
        assert resp.status == 400, bad
    assert journal.list_nodes()[0].interval_s == 900
    resp = await admin.put("/api/admin/nodes/ghost/interval", json={"interval_s": 600}, headers=AS_ADMIN)
    assert resp.status == 404


ADMIN_ROUTES = [
    ("POST", "/api/admin/nodes"),
    ("POST", "/api/admin/nodes/n1/password"),
    ("DELETE", "/api/admin/nodes/n1"),
    ("PUT", "/api/admin/nodes/n1/interval"),
    ("POST", "/api/admin/nodes/n1/halt"),
    ("POST", "/api/admin/nodes/n1/resume"),
    ("POST", "/api/admin/halt"),
    ("POST", "/api/admin/resume"),
]


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
async def test_without_an_admin_token_configured_admin_routes_are_off(make_client, journal, method, path):
    register(journal, "n1", PW, created=True)
    client = await make_client(read_token=READ)
    for headers in ({}, {"Authorization": f"Bearer {READ}"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer guess"}):
        resp = await client.request(method, path, json={"name": "x", "interval_s": 600}, headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (404, "admin_disabled")
    assert journal.is_registered("n1") and not journal.halted_all()


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
async def test_without_an_admin_token_node_credentials_get_404_too(make_client, journal, method, path):
    """Admin that is off is off for everyone: a node's own credentials (right or wrong) learn
    nothing more than a stranger does, and count as no failed login."""
    register(journal, "n1", PW, created=True)
    client = await make_client(read_token=READ, auth_max_failures=2)
    for password in (PW, "wrong", "wrong", "wrong"):
        resp = await client.request(method, path, headers={"Authorization": " Basic " + auth.xauth("n1", password)})
        assert (resp.status, (await resp.json())["error"]) == (404, "admin_disabled")
    assert journal.is_registered("n1") and not journal.halted_all()


def test_the_docs_say_what_the_code_does_when_admin_is_off():
    """docs/api.md's table of who gets what: with admin off, every request (node credentials too)
    gets 404 on the admin routes, as the two tests above check."""
    from pathlib import Path

    table = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    off = [line for line in table.splitlines() if line.startswith("| admin token not configured")]
    assert len(off) == 1 and "404 `admin_disabled`" in off[0] and "403" not in off[0], off
    basic = [line for line in table.splitlines() if line.startswith("| node credentials (`Basic`)")]
    assert len(basic) == 1 and "404 when admin is off" in basic[0], basic


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
async def test_admin_routes_refuse_everyone_but_the_admin_token(admin, journal, method, path):
    register(journal, "n1", PW, created=True)
    cases = [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-token"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {READ}"}, 403, "read_only"),
        ({"Authorization": " Basic " + auth.xauth("n1", PW)}, 403, "node_credentials"),
    ]
    for headers, status, error in cases:
        resp = await admin.request(method, path, json={"name": "x", "interval_s": 600}, headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (status, error), headers
    assert journal.is_registered("n1") and not journal.is_registered("x") and not journal.halted_all()
    assert journal.list_nodes()[0].interval_s == 300 and not journal.list_nodes()[0].halted


# -- bodies of the wrong shape -------------------------------------------------------------------

NAME_HELP = "a node name: 1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"
PASSWORD_HELP = "a non-empty string; leave it out and a strong one is generated"
INTERVAL_HELP = "whole seconds between the node's readings, 10 to 604800"


@pytest.mark.parametrize(
    "method, path, body, detail",
    [
        ("POST", "/api/admin/nodes", {"name": 42}, f"name must be a string ({NAME_HELP}), not a number"),
        ("POST", "/api/admin/nodes", {"name": None}, f"name must be a string ({NAME_HELP}), not null"),
        ("POST", "/api/admin/nodes", {"name": True}, f"name must be a string ({NAME_HELP}), not a boolean"),
        ("POST", "/api/admin/nodes", {"name": {"n": "porch"}}, f"name must be a string ({NAME_HELP}), not an object"),
        ("POST", "/api/admin/nodes", {"name": ["porch"]}, f"name must be a string ({NAME_HELP}), not an array"),
        ("POST", "/api/admin/nodes", {}, f"name is required ({NAME_HELP})"),
        ("POST", "/api/admin/nodes", {"name": "no/slash"}, f"name 'no/slash' is not {NAME_HELP}"),
        ("POST", "/api/admin/nodes", {"name": "porch", "password": 123456}, f"password must be a string ({PASSWORD_HELP}), not a number"),
        ("POST", "/api/admin/nodes", {"name": "porch", "password": None}, f"password must be a string ({PASSWORD_HELP}), not null"),
        ("POST", "/api/admin/nodes", {"name": "porch", "password": ""}, f"password must not be empty ({PASSWORD_HELP})"),
        ("POST", "/api/admin/nodes", {"name": "porch", "password": "pw\ud800"},
         f"password must be UTF-8 text (it holds a code point or a byte that is not) ({PASSWORD_HELP})"),
        ("POST", "/api/admin/nodes", {"name": "porch", "password": "pw\x00"}, f"password must not contain a NUL character ({PASSWORD_HELP})"),
        ("POST", "/api/admin/nodes/n1/password", {"password": "\udfff"},
         f"password must be UTF-8 text (it holds a code point or a byte that is not) ({PASSWORD_HELP})"),
        ("POST", "/api/admin/nodes", {"name": "porch", "pasword": "pw-123456"}, "unknown field 'pasword'; this route takes name, password, display"),
        ("POST", "/api/admin/nodes/n1/password", {"password": False}, f"password must be a string ({PASSWORD_HELP}), not a boolean"),
        ("POST", "/api/admin/nodes/n1/password", {"name": "n1"}, "unknown field 'name'; this route takes password"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": "600"}, f"interval_s must be an integer ({INTERVAL_HELP}), not a string"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": 600.0}, f"interval_s must be an integer ({INTERVAL_HELP}), not a decimal number"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": 5.5}, f"interval_s must be an integer ({INTERVAL_HELP}), not a decimal number"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": True}, f"interval_s must be an integer ({INTERVAL_HELP}), not a boolean"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": None}, f"interval_s must be an integer ({INTERVAL_HELP}), not null"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": [600]}, f"interval_s must be an integer ({INTERVAL_HELP}), not an array"),
        ("PUT", "/api/admin/nodes/n1/interval", {}, f"interval_s is required ({INTERVAL_HELP})"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": 5}, "the interval must be between 10 and 604800 seconds, got 5"),
        ("PUT", "/api/admin/nodes/n1/interval", {"interval": 600}, "unknown field 'interval'; this route takes interval_s"),
        ("DELETE", "/api/admin/nodes/n1", {"name": "n1"}, "unknown field 'name'; this route takes no body"),
        ("POST", "/api/admin/nodes/n1/halt", {"halted": "false"}, "unknown field 'halted'; this route takes no body"),
        ("POST", "/api/admin/halt", {"node": "n1"}, "unknown field 'node'; this route takes no body"),
        ("POST", "/api/admin/resume", {"node": "n1"}, "unknown field 'node'; this route takes no body"),
    ],
)
async def test_a_field_of_the_wrong_type_or_name_says_so(admin, journal, method, path, body, detail):
    register(journal, "n1", PW, created=True)
    resp = await admin.request(method, path, json=body, headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (400, {"error": "bad_request", "detail": detail})
    assert [n.name for n in journal.list_nodes()] == ["n1"]
    assert journal.list_nodes()[0].interval_s == 300 and not journal.halted_all() and not journal.list_nodes()[0].halted


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
@pytest.mark.parametrize(
    "data, detail",
    [
        ("[1, 2]", "the body must be a JSON object, not an array"),
        ('"porch"', "the body must be a JSON object, not a string"),
        ("null", "the body must be a JSON object, not null"),
        ("{not json", "the body is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"\xff\xfe{", "the body is not JSON: it is not UTF-8 text"),
        ("[" * 3000, "the body is not JSON: it is nested too deeply")  # within TSWARM_MAX_BODY,
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused_on_every_route(admin, journal, method, path, data, detail):
    register(journal, "n1", PW, created=True)
    resp = await admin.request(method, path, data=data, headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (400, {"error": "bad_request", "detail": detail})
    assert journal.is_registered("n1") and not journal.halted_all()


@pytest.mark.parametrize("method, path", [route for route in ADMIN_ROUTES if route[0] != "PUT" and route[1] != "/api/admin/nodes"])
async def test_routes_without_required_fields_take_an_empty_body_or_an_empty_object(admin, journal, method, path):
    for data in (None, b"", b"  \n", b"{}"):
        if not journal.is_registered("n1"):
            register(journal, "n1", PW, created=True)
        resp = await admin.request(method, path, data=data, headers=AS_ADMIN)
        assert resp.status == 200, (data, await resp.text())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["name", "password", "interval_s", "node"]), json_values, max_size=3),
)


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ADMIN_ROUTES), body=bodies)
async def test_any_json_body_gets_an_answer_with_json_never_a_5xx(admin, journal, route, body):
    method, path = route
    if not journal.is_registered("n1"):
        register(journal, "n1", PW, created=True)
    resp = await admin.request(method, path, data=json.dumps(body), headers=AS_ADMIN)
    answer = await resp.json()
    assert resp.status in (200, 201, 400, 404, 409), (resp.status, answer)
    assert resp.status < 300 or (set(answer) == {"error", "detail"} and answer["detail"])


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/api/admin/nodes", {"name": "porch", "password": "pw-porch-123"}, 201),
    ("POST", "/api/admin/nodes/n1/password", {"password": "new-pw-456"}, 200),
    ("POST", "/api/admin/halt", None, 200),
    ("PUT", "/api/admin/nodes/n1/interval", {"interval_s": 600}, 200),
    ("DELETE", "/api/admin/nodes/n1", None, 200),
])
async def test_an_admin_write_waiting_for_the_write_lock_leaves_the_loop_free(
    admin, journal, data_dir, monkeypatch, method, path, body, status
):
    """Another process holds the journal's write lock: the admin write waits in the storage write
    thread (up to the 10 s busy timeout), and /healthz is answered meanwhile."""
    import asyncio
    import threading

    Journal = type(journal)  # the engine whose methods are held
    register(journal, "n1", PW, created=True)
    entered = threading.Event()
    for name in ("add_node", "set_password", "set_halt", "set_interval", "remove_node"):
        real = getattr(Journal, name)
        monkeypatch.setattr(Journal, name, lambda j, *a, _real=real: entered.set() or _real(j, *a))
    with write_lock_held(data_dir):
        writing = asyncio.ensure_future(admin.request(method, path, json=body, headers=AS_ADMIN))
        assert await asyncio.to_thread(entered.wait, 30)
        health = await admin.get("/healthz")
        assert health.status == 200
        assert not writing.done()
    resp = await writing
    assert resp.status == status, await resp.text()


# -- over-the-air updates: what `tswarm firmware push`, `node config --push` and `firmware status` do ----

import hashlib  # noqa: E402

from tswarm import bundles  # noqa: E402

FW_FILES = [("node.py", b"print('node')\n" * 500), ("ota.py", b"# ota\n")]
FW_VERSION = bundles.version_of(FW_FILES)


def files_json(files=FW_FILES):
    return [{"name": n, "content_b64": base64.b64encode(c).decode()} for n, c in files]


FIRMWARE_ROUTES = [
    ("POST", "/api/admin/firmware", {"files": files_json(), "all": True}),
    ("GET", "/api/admin/firmware", None),
    ("POST", "/api/admin/nodes/n1/config", {"patch": {"netconf": {"sleep": 600}}}),
    ("DELETE", "/api/admin/nodes/n1/firmware", None),
]


async def test_push_firmware_stages_the_bundle_for_the_nodes_given(admin, journal):
    for name in ("n1", "n2"):
        register(journal, name, PW, created=True)
    resp = await admin.post("/api/admin/firmware", json={"files": files_json(), "nodes": ["n1"]}, headers=AS_ADMIN)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "version": FW_VERSION, "staged": ["n1"], "replaced": {},
        "files": [{"name": n, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()} for n, c in FW_FILES],
    }
    assert {n.name: n.firmware.staged for n in journal.list_nodes()} == {"n1": FW_VERSION, "n2": None}
    assert journal.bundle_file(FW_VERSION, "node.py") == FW_FILES[0][1]
    resp = await admin.post("/api/admin/firmware", json={"files": files_json([("node.py", b"v3")]), "all": True},
                            headers=AS_ADMIN)
    doc = await resp.json()
    assert doc["staged"] == ["n1", "n2"] and doc["replaced"] == {"n1": FW_VERSION}
    assert {n.firmware.staged for n in journal.list_nodes()} == {doc["version"]}


async def test_push_config_stages_a_config_patch_and_never_touches_the_password(admin, journal):
    register(journal, "n1", PW, created=True)
    before = journal.node_auth("n1").password_hash
    patch = {"netconf": {"ssid": ["new"], "password": ["pw"]}}
    resp = await admin.post("/api/admin/nodes/n1/config", json={"patch": patch}, headers=AS_ADMIN)
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    (name, content), = bundles.config_patch(patch)
    assert doc == {"version": bundles.version_of([(name, content)]), "staged": ["n1"], "replaced": {}}
    assert journal.bundle_file(doc["version"], bundles.CONFIG_PATCH) == content
    assert journal.node_auth("n1").password_hash == before
    assert journal.node_auth("n1").fw_staged == doc["version"]


async def test_unstage_and_the_firmware_status(admin, journal):
    register(journal, "n1", PW, created=True)
    register(journal, "n2", PW, created=True)
    await admin.post("/api/admin/firmware", json={"files": files_json(), "all": True}, headers=AS_ADMIN)
    journal.report_firmware("n2", FW_VERSION, None, 1_764_000_000 * 10**9)
    status = await (await admin.get("/api/admin/firmware", headers=AS_ADMIN)).json()
    assert [(s["node"], s["staged"], s["outcome"]) for s in status] == [
        ("n1", FW_VERSION, "pending"), ("n2", FW_VERSION, "updated"),
    ]
    assert status[1] == {"node": "n2", **bundles.firmware_json(journal.firmware_state("n2"))}
    resp = await admin.delete("/api/admin/nodes/n1/firmware", headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (200, {"node": "n1", "staged": None})
    assert journal.firmware_state("n1").staged is None and journal.firmware_state("n2").staged == FW_VERSION
    resp = await admin.delete("/api/admin/nodes/ghost/firmware", headers=AS_ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (404, "unknown_node")


@pytest.mark.parametrize("body, status, error, says", [
    ({"files": files_json()}, 400, "bad_request", 'give "nodes": [names] or "all": true, not both'),
    ({"files": files_json(), "all": True, "nodes": ["n1"]}, 400, "bad_request", "not both"),
    ({"files": files_json(), "all": False}, 400, "bad_request", "not both"),
    ({"files": files_json(), "nodes": []}, 400, "bad_request", "nodes is empty"),
    ({"files": files_json(), "nodes": ["a/b"]}, 400, "bad_request", "is not a node name"),
    ({"files": files_json(), "nodes": [7]}, 400, "bad_request", "a number is not a node name"),
    ({"files": files_json(), "nodes": ["ghost"]}, 404, "unknown_node", "ghost"),
    ({"files": files_json(), "nodes": ["n1", "ghost"]}, 404, "unknown_node", "ghost"),
    ({"files": "node.py", "all": True}, 400, "bad_request", "files must be an array"),
    ({"files": [{"name": "node.py"}], "all": True}, 400, "bad_request", "exactly name and content_b64"),
    ({"files": [{"name": "node.py", "content_b64": "%%%"}], "all": True}, 400, "bad_request", "is not base64"),
    ({"files": [{"name": 1, "content_b64": ""}], "all": True}, 400, "bad_request", "must be strings"),
    ({"files": [], "all": True}, 400, "bad_request", "at least one file"),
    ({"files": files_json([("main.py", b"")]), "all": True}, 400, "bad_request", "boot loader"),
    ({"files": files_json([("../x.py", b"")]), "all": True}, 400, "bad_request", "no folders"),
    ({"files": files_json([("x.txt", b"")]), "all": True}, 400, "bad_request", ".py files"),
    ({"files": files_json(), "all": "yes"}, 400, "bad_request", "all must be true or false"),
    ({"files": files_json(), "all": True, "version": "x"}, 400, "bad_request", "unknown field 'version'"),
])
async def test_push_firmware_refuses_bad_bodies_and_stages_nothing(admin, journal, body, status, error, says):
    register(journal, "n1", PW, created=True)
    resp = await admin.post("/api/admin/firmware", json=body, headers=AS_ADMIN)
    doc = await resp.json()
    assert (resp.status, doc["error"]) == (status, error) and says in doc["detail"], doc
    assert journal.firmware_state("n1").staged is None


async def test_push_firmware_to_every_node_of_none_is_a_404(admin, journal):
    resp = await admin.post("/api/admin/firmware", json={"files": files_json(), "all": True}, headers=AS_ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (404, "no_nodes")


async def test_push_firmware_takes_a_bundle_bigger_than_a_reading_but_not_without_bound(admin, journal):
    register(journal, "n1", PW, created=True)
    big = [(f"f{i}.py", bytes([65 + i]) * bundles.MAX_FILE_BYTES) for i in range(4)]  # the most a bundle holds
    resp = await admin.post("/api/admin/firmware", json={"files": files_json(big), "all": True}, headers=AS_ADMIN)
    assert resp.status == 200, await resp.text()
    assert journal.firmware_state("n1").staged == bundles.version_of(big)
    huge = b'{"files": "' + b"A" * (2 * 1024 * 1024) + b'"}'
    resp = await admin.post("/api/admin/firmware", data=huge, headers=AS_ADMIN)
    assert (resp.status, resp.content_type) == (413, "application/json")


@pytest.mark.parametrize("body, says", [
    ({}, "patch is required"),
    ({"patch": []}, "patch must be an object"),
    ({"patch": {}}, "the config change is empty"),
    ({"patch": {"svconf": {"login": "x"}}}, "credential"),
    ({"patch": {"svconf": {"xauth": "x"}}}, "credential"),
    ({"patch": {"netconf": {"sleep": 60}}, "node": "n2"}, "unknown field 'node'"),
])
async def test_push_config_refuses_bad_patches(admin, journal, body, says):
    register(journal, "n1", PW, created=True)
    resp = await admin.post("/api/admin/nodes/n1/config", json=body, headers=AS_ADMIN)
    doc = await resp.json()
    assert (resp.status, doc["error"]) == (400, "bad_request") and says in doc["detail"], doc
    assert journal.firmware_state("n1").staged is None


@pytest.mark.parametrize("body, says", [
    ('{"patch": {"netconf": {"ssid": [""], "password": ["x"]}}}', "netconf.ssid must be 1 to 32 bytes (a network name), got 0"),
    ('{"patch": {"netconf": {"ssid": ["%s"], "password": ["x"]}}}' % ("s" * 33), "netconf.ssid must be 1 to 32 bytes"),
    ('{"patch": {"netconf": {"ssid": ["home\\udcff"], "password": ["x"]}}}', "netconf.ssid 'home\\udcff' is not UTF-8 text"),
    ('{"patch": {"netconf": {"ssid": ["home"], "password": ["%s"]}}}' % ("p" * 65), "netconf.password must be 0 to 64 bytes"),
    ('{"patch": {"netconf": {"ssid": ["home"], "password": ["pw\\udcff"]}}}', "netconf.password is not UTF-8 text"),
    ('{"patch": {"netconf": {"ssid": ["home"]}}}', "netconf.ssid without netconf.password"),
    ('{"patch": {"netconf": {"ip": "300.1.1.1"}}}', "netconf.ip '300.1.1.1' is not an IPv4 address"),
    ('{"patch": {"netconf": {"netmask": "255.0.255.0"}}}', "netconf.netmask '255.0.255.0' is not a netmask"),
    ('{"patch": {"netconf": {"gateway": 192}}}', "netconf.gateway must be an IPv4 address as a string"),
    ('{"patch": {"netconf": {"sleep": 5}}}', "netconf.sleep must be a whole number of seconds, 10 to 604800"),
    ('{"patch": {"svconf": "x"}}', "svconf must be an object"),
], ids=["empty-ssid", "long-ssid", "ssid-not-utf8", "long-wifi-password", "wifi-password-not-utf8", "ssid-alone",
        "bad-ip", "bad-netmask", "gateway-a-number", "short-sleep", "svconf-not-object"])
async def test_push_config_refuses_what_the_cli_refuses_and_stages_nothing(admin, journal, body, says):
    """The CLI's checks (service/flash.py's check_wifi, address_problem), at the root (bundles.check_patch):
    before, the admin API staged these, and the board that could not join its network rolled back."""
    register(journal, "n1", PW, created=True)
    resp = await admin.post("/api/admin/nodes/n1/config", data=body, headers=AS_ADMIN)
    doc = await resp.json()
    assert (resp.status, doc["error"]) == (400, "bad_request") and says in doc["detail"], doc
    assert "'pw" not in doc["detail"]  # a Wi-Fi password is never quoted
    assert journal.firmware_state("n1").staged is None and journal.node_auth("n1").interval_s == 300


async def test_push_config_sleep_is_the_interval_every_answer_tells_the_board(admin, journal):
    """As `tswarm node config --push --sleep`: the board sleeps by the answer's "sleep", so a
    netconf.sleep that only went into the patch changed nothing while the service answered."""
    register(journal, "n1", PW, created=True)
    resp = await admin.post("/api/admin/nodes/n1/config", json={"patch": {"netconf": {"sleep": 900}}}, headers=AS_ADMIN)
    assert resp.status == 200, await resp.text()
    assert journal.node_auth("n1").interval_s == 900
    reading = await post_reading(admin, "n1", PW)
    assert (reading.status, (await reading.json())["sleep"]) == (202, 900)
    resp = await admin.post("/api/admin/nodes/n1/config", json={"patch": {"modules": {"sensor": "dht11"}}}, headers=AS_ADMIN)
    assert resp.status == 200 and journal.node_auth("n1").interval_s == 900  # no sleep: the interval stays


@pytest.mark.parametrize("files, says", [
    ([("node.py", b"")], "node.py is empty"),
    ([("node.py", b"print('caf\xe9')\n")], "node.py is not UTF-8 text"),
    ([("node.py", b"a = 1\n"), ("NODE.py", b"a = 2\n")], "differ only in case"),
    ([(bundles.CONFIG_PATCH, b'{"netconf": {"ssid": ["%s"], "password": ["x"]}}' % (b"s" * 33))], "netconf.ssid must be 1 to 32 bytes"),
], ids=["empty-node-py", "node-py-not-utf8", "names-differ-in-case", "patch-long-ssid"])
async def test_push_firmware_refuses_a_bundle_that_could_brick_a_board(admin, journal, files, says):
    register(journal, "n1", PW, created=True)
    resp = await admin.post("/api/admin/firmware", json={"files": files_json(files), "all": True}, headers=AS_ADMIN)
    doc = await resp.json()
    assert (resp.status, doc["error"]) == (400, "bad_request") and says in doc["detail"], doc
    assert journal.firmware_state("n1").staged is None


async def test_push_config_for_a_node_not_registered_is_a_404_and_registers_nothing(admin, journal):
    resp = await admin.post("/api/admin/nodes/ghost/config", json={"patch": {"netconf": {"sleep": 60}}}, headers=AS_ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (404, "unknown_node")
    assert journal.list_nodes() == []


@pytest.mark.parametrize("method, path, body", FIRMWARE_ROUTES, ids=[f"{m} {p}" for m, p, _ in FIRMWARE_ROUTES])
async def test_firmware_admin_routes_refuse_everyone_but_the_admin_token(make_client, admin, journal, method, path, body):
    register(journal, "n1", PW, created=True)
    for headers, status, error in [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-token"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {READ}"}, 403, "read_only"),
        ({"Authorization": " Basic " + auth.xauth("n1", PW)}, 403, "node_credentials"),
    ]:
        resp = await admin.request(method, path, json=body, headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (status, error), headers
    off = await make_client(read_token=READ)
    resp = await off.request(method, path, json=body, headers=AS_ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (404, "admin_disabled")
    assert journal.firmware_state("n1").staged is None


firmware_bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["files", "nodes", "all", "patch"]), st.one_of(
        json_values,
        st.lists(st.fixed_dictionaries({"name": st.sampled_from(["node.py", "main.py", "a b", ""]),
                                        "content_b64": st.sampled_from(["", "eA==", "%%", "eA"])}), max_size=3),
        st.lists(st.sampled_from(["n1", "ghost", "a/b", ""]), max_size=3),
    ), max_size=3),
)


@settings(deadline=None, max_examples=75, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from([(m, p) for m, p, _ in FIRMWARE_ROUTES]), body=firmware_bodies)
async def test_any_json_body_to_a_firmware_route_gets_json_never_a_5xx(admin, journal, route, body):
    method, path = route
    if not journal.is_registered("n1"):
        register(journal, "n1", PW, created=True)
    resp = await admin.request(method, path, data=json.dumps(body), headers=AS_ADMIN)
    answer = await resp.json()
    assert resp.status in (200, 400, 404), (resp.status, answer)
    assert resp.status < 300 or (set(answer) == {"error", "detail"} and answer["detail"])


# -- the display right (a master node: GET /api/nodes/{name}/swarm) --------------------------------


async def _swarm_status(client, name, password=PW):
    return (await client.get(f"/api/nodes/{name}/swarm",
                             headers={"Authorization": " Basic " + auth.xauth(name, password)})).status


async def test_add_node_with_display_gives_the_right_and_without_it_none(admin, journal):
    resp = await admin.post("/api/admin/nodes", json={"name": "hall", "password": PW, "display": True}, headers=AS_ADMIN)
    assert resp.status == 201 and journal.node_auth("hall").display is True
    assert await _swarm_status(admin, "hall") == 200
    resp = await admin.post("/api/admin/nodes", json={"name": "desk", "password": PW}, headers=AS_ADMIN)
    assert resp.status == 201 and journal.node_auth("desk").display is False
    assert await _swarm_status(admin, "desk") == 403
    resp = await admin.post("/api/admin/nodes", json={"name": "den", "display": False}, headers=AS_ADMIN)
    assert resp.status == 201 and journal.node_auth("den").display is False


@pytest.mark.parametrize("value, kind", [("true", "a string"), (1, "a number"), (None, "null"), ([True], "an array")])
async def test_a_display_that_is_no_json_boolean_is_400_and_adds_nothing(admin, journal, value, kind):
    resp = await admin.post("/api/admin/nodes", json={"name": "hall", "display": value}, headers=AS_ADMIN)
    assert resp.status == 400
    doc = await resp.json()
    assert doc["error"] == "bad_request" and doc["detail"].startswith("display must be true or false (")
    assert doc["detail"].endswith(f"not {kind}") and not journal.is_registered("hall")
    register(journal, "hall", PW)
    resp = await admin.put("/api/admin/nodes/hall/display", json={"display": value}, headers=AS_ADMIN)
    assert resp.status == 400 and (await resp.json())["detail"].endswith(f"not {kind}")
    assert journal.node_auth("hall").display is False


async def test_put_display_turns_the_right_on_and_off_and_the_next_request_sees_it(admin, journal):
    register(journal, "hall", PW, created=True)
    assert await _swarm_status(admin, "hall") == 403
    resp = await admin.put("/api/admin/nodes/hall/display", json={"display": True}, headers=AS_ADMIN)
    assert resp.status == 200 and await resp.json() == {"node": "hall", "display": True}
    assert await _swarm_status(admin, "hall") == 200
    resp = await admin.put("/api/admin/nodes/hall/display", json={"display": False}, headers=AS_ADMIN)
    assert resp.status == 200 and await resp.json() == {"node": "hall", "display": False}
    assert await _swarm_status(admin, "hall") == 403


async def test_put_display_of_an_unknown_node_is_404_and_without_a_body_400(admin, journal):
    resp = await admin.put("/api/admin/nodes/nobody/display", json={"display": True}, headers=AS_ADMIN)
    assert resp.status == 404 and (await resp.json())["error"] == "unknown_node"
    register(journal, "hall", PW)
    resp = await admin.put("/api/admin/nodes/hall/display", headers=AS_ADMIN)
    assert resp.status == 400 and (await resp.json())["detail"].startswith("display is required")
    resp = await admin.put("/api/admin/nodes/hall/display", json={"display": True})  # no token
    assert resp.status == 401 and journal.node_auth("hall").display is False


async def test_a_body_that_names_a_field_twice_is_refused_not_read_as_its_last(admin, journal):
    """Which of two "name"s a JSON parser keeps is its own guess (Python's: the last): a 400 instead."""
    resp = await admin.post("/api/admin/nodes", data='{"name": "porch", "name": "shed"}', headers=AS_ADMIN)
    assert (resp.status, await resp.json()) == (400, {
        "error": "bad_request", "detail": "the body gives 'name' more than once; give each field once"})
    assert not journal.is_registered("porch") and not journal.is_registered("shed")
    register(journal, "n1", PW, created=True)
    resp = await admin.post("/api/admin/nodes/n1/config", data='{"patch": {"netconf": {"sleep": 60, "sleep": 6}}}', headers=AS_ADMIN)
    assert (resp.status, (await resp.json())["detail"]) == (400, "the body gives 'sleep' more than once; give each field once")


async def test_a_body_too_large_is_a_413_saying_the_limit(admin, journal):
    resp = await admin.post("/api/admin/nodes", data='{"name": "porch", "password": "' + "x" * 5000 + '"}', headers=AS_ADMIN)
    assert (resp.status, resp.headers["Connection"]) == (413, "close")
    assert await resp.json() == {"error": "too_large", "detail": "the body is larger than 4096 bytes (decoded), more than this route takes"}
    assert not journal.is_registered("porch")
