"""Admin over HTTP (Bearer TSWARM_ADMIN_TOKEN): the CLI's node, halt and resume commands."""
from __future__ import annotations

import base64
import json

import pytest

from tswarm import auth

from .conftest import register

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
    assert journal.node_exists("porch")
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
    assert not journal.node_exists("n1")
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
    for headers in ({}, {"Authorization": f"Bearer {READ}"}, {"Authorization": "Bearer "}):
        resp = await client.request(method, path, json={"name": "x", "interval_s": 600}, headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (404, "admin_disabled")
    assert journal.node_exists("n1") and not journal.halted_all()


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
    assert journal.node_exists("n1") and not journal.node_exists("x") and not journal.halted_all()
    assert journal.list_nodes()[0].interval_s == 300 and not journal.list_nodes()[0].halted
