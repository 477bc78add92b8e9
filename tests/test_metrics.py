"""GET /metrics: Prometheus exposition, one registry per app, counts only."""
from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tswarm import auth

from tswarm.storage import ReadingExtra

from .conftest import register

pytestmark = pytest.mark.engines

PW = "secret-pw"
READ, ADMIN = "read-token-0123456789", "admin-token-0123456789"


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of every sample, without the *_created timestamps."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


async def post_reading(client, name="n1", password=PW, data="21.5 40"):
    return await client.post(
        f"/api/nodes/{name}", data=json.dumps({"name": name, "data": data}),
        headers={"Authorization": " Basic " + auth.xauth(name, password), "Content-Type": "application/json"},
    )


async def scrape(client) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    return samples(await resp.text())


async def test_metrics_count_requests_readings_commits_and_the_credential_cache(make_client, journal):
    register(journal, "n1", PW, created=True)
    client = await make_client()
    for _ in range(3):
        assert (await post_reading(client)).status == 202
    assert (await post_reading(client, password="wrong")).status == 401
    assert (await client.get("/nope")).status == 404
    m = await scrape(client)
    assert m[("tswarm_readings_accepted_total", frozenset())] == 3
    assert m[("tswarm_http_requests_total", frozenset({("route", "/api/nodes/{name}"), ("status", "202")}))] == 3
    assert m[("tswarm_http_requests_total", frozenset({("route", "/api/nodes/{name}"), ("status", "401")}))] == 1
    assert m[("tswarm_http_requests_total", frozenset({("route", "unmatched"), ("status", "404")}))] == 1
    assert m[("tswarm_journal_commit_seconds_count", frozenset())] == 3  # one request at a time: 3 commits
    assert m[("tswarm_journal_commit_batch_size_count", frozenset())] == 3
    assert m[("tswarm_journal_commit_batch_size_sum", frozenset())] == 3
    assert m[("tswarm_journal_commit_batch_size_bucket", frozenset({("le", "1.0")}))] == 3
    assert m[("tswarm_auth_cache_hits_total", frozenset())] == 2  # the first login verified the hash
    assert m[("tswarm_auth_cache_misses_total", frozenset())] == 2  # that one, and the wrong password
    assert m[("tswarm_forward_backlog", frozenset())] == 0
    assert m[("tswarm_forward_lag_seconds", frozenset())] == 0
    assert m[("tswarm_journal_queued", frozenset())] == 0
    cpu = m[("tswarm_journal_writer_cpu_seconds_total", frozenset())]
    assert 0 < cpu < 5  # three small commits' inserts and syncs in the writer's thread
    assert m[("tswarm_nodes", frozenset({("health", "ok")}))] == 1
    assert m[("tswarm_nodes", frozenset({("health", "silent")}))] == 0
    assert (await post_reading(client)).status == 202
    m = await scrape(client)
    assert m[("tswarm_http_requests_total", frozenset({("route", "/metrics"), ("status", "200")}))] == 1
    assert m[("tswarm_journal_writer_cpu_seconds_total", frozenset())] > cpu  # one more commit


async def test_each_app_has_its_own_registry(make_client, journal):
    register(journal, "n1", PW, created=True)
    first, second = await make_client(), await make_client()
    assert (await post_reading(first)).status == 202
    assert (await scrape(first))[("tswarm_readings_accepted_total", frozenset())] == 1
    assert (await scrape(second))[("tswarm_readings_accepted_total", frozenset())] == 0


async def test_metrics_need_no_token_and_show_no_secrets_or_readings(make_client, journal):
    register(journal, "n1", PW, created=True)
    client = await make_client(read_token=READ, admin_token=ADMIN)
    assert (await post_reading(client, data="23.456 67.891")).status == 202
    text = await (await client.get("/metrics")).text()
    for secret in (READ, ADMIN, PW, auth.xauth("n1", PW), "23.456", "67.891", "n1"):
        assert secret not in text


async def test_battery_and_signal_of_each_nodes_newest_reading_for_nodes_that_send_them(make_client, journal):
    import time

    for name in ("a", "b", "c", "d"):
        register(journal, name, PW, created=True)
    now = time.time_ns()
    journal.add_readings([
        ("a", now - 2000, 21.0, 40.0, ReadingExtra(vbat=3.1, rssi=-80)),
        ("a", now - 1000, 21.0, 40.0, ReadingExtra(vbat=3.92, rssi=-58, awake_ms=812)),
        ("b", now - 1000, 21.0, 40.0, ReadingExtra(vbat=3.25)),
        ("c", now - 1000, 21.0, 40.0, ReadingExtra(rssi=-71, lost=1)),
        ("d", now - 1000, 21.0, 40.0),
    ])
    m = await scrape(await make_client())
    volts = {dict(labels)["node"]: v for (name, labels), v in m.items() if name == "tswarm_node_battery_volts"}
    dbm = {dict(labels)["node"]: v for (name, labels), v in m.items() if name == "tswarm_node_rssi_dbm"}
    assert volts == {"a": 3.92, "b": 3.25}
    assert dbm == {"a": -58, "c": -71}


async def test_a_reading_sent_again_is_counted_as_a_duplicate_not_as_accepted_twice(make_client, journal):
    register(journal, "n1", PW, created=True)
    client = await make_client()
    body = json.dumps({"name": "n1", "data": "21.5 40", "boot": "b1", "seq": 7})
    headers = {"Authorization": " Basic " + auth.xauth("n1", PW), "Content-Type": "application/json"}
    for _ in range(3):
        assert (await client.post("/api/nodes/n1", data=body, headers=headers)).status == 202
    m = await scrape(client)
    assert m[("tswarm_readings_duplicate_total", frozenset())] == 2
    assert journal.count_readings() == 1


async def test_forward_backlog_and_lag_come_from_the_journal(make_client, journal):
    """store=influxdb with an InfluxDB that does not answer (a closed loopback port): what waits shows."""
    from tests.servers import free_port

    register(journal, "n1", PW, created=True)
    client = await make_client(store="influxdb", influx_api="1", influx_url=f"http://127.0.0.1:{free_port()}")
    for _ in range(3):
        assert (await post_reading(client)).status == 202
    m = await scrape(client)
    assert m[("tswarm_forward_backlog", frozenset())] == 3
    assert m[("tswarm_forward_lag_seconds", frozenset())] > 0  # the first of them waited through two more requests

async def test_a_scrape_reads_the_journal_off_the_loop(make_client, journal, monkeypatch):
    """/metrics reads the nodes' health in a storage thread: while that read waits, /healthz is answered."""
    import asyncio

    from .test_pool import Held

    register(journal, "n1", PW, created=True)
    client = await make_client()
    listing = Held(monkeypatch, "list_nodes", type(journal))
    scraping = asyncio.ensure_future(scrape(client))
    await listing.wait_entered()
    assert (await client.get("/healthz")).status == 200
    assert not scraping.done()
    listing.release()
    assert (await scraping)[("tswarm_nodes", frozenset({("health", "never")}))] == 1
    assert listing.released == [True]


def test_request_counts_are_exposed_as_the_prometheus_counter_they_replace():
    """The per-answer count is a plain dict now (service/metrics.py ``RequestCounts``): its exposition
    is, line for line, what prometheus-client's ``Counter`` gave for the same answers (the
    ``_created`` times aside, which are when each pair was first seen)."""
    import re

    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from tswarm.metrics import RequestCounts

    counts = RequestCounts()
    ours = CollectorRegistry(auto_describe=True)
    ours.register(counts)
    theirs = CollectorRegistry(auto_describe=True)
    counter = Counter("tswarm_http_requests", "HTTP requests answered, by route and status.", ["route", "status"], registry=theirs)
    assert generate_latest(ours) == generate_latest(theirs)  # nothing counted yet: HELP and TYPE only
    for route, status in [("/api/nodes/{name}", 202), ("unmatched", 404), ("/api/nodes/{name}", 202),
                          ("/api/nodes/{name}", 423), ("/metrics", 200), ("unmatched", 404), ("/api/nodes/{name}", 499)]:
        counts.inc(route, status)
        counter.labels(route, str(status)).inc()
    created = re.compile(rb"^(tswarm_http_requests_created\{.*\}) \S+$", re.M)
    assert created.sub(rb"\1 T", generate_latest(ours)) == created.sub(rb"\1 T", generate_latest(theirs))
