"""Alerts (service/alerts.py and the alerts room of both storage engines): what the judge makes of each
node's health and battery, the state and outbox in the journal, and delivery to a real HTTP receiver
(an aiohttp server this file starts on loopback, :class:`Receiver`), including one that is down for
a while. The judge's clock is the ``now`` the tests drive; nothing here asserts how long anything took."""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from tswarm import keys
from tswarm.alerts import BATTERY_HYSTERESIS_V, Alerts, changes, judge
from tswarm.app import create_app
from tswarm.settings import Config, ConfigError
from tswarm.storage import AlertChange, AlertState, ReadingExtra
from tests.conftest import NS, T0, add_readings, open_journal, register, test_config
from tests.servers import free_port

pytestmark = pytest.mark.engines

MIN = 60 * NS


# -- a real receiver -------------------------------------------------------------------------------


class Receiver:
    """An aiohttp web server on loopback, in a thread and event loop of its own, that keeps the JSON of
    every POST to ``/hook`` and answers each with the next of ``statuses`` (then 200). :meth:`down`
    stops listening (connections are refused), :meth:`up` listens again on the same port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="receiver")
        self._thread.start()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = self.statuses.pop(0) if self.statuses else 200
        if 200 <= status < 300:
            self.bodies.append(body)
        return web.json_response({"seen": body["id"]}, status=status)

    async def _up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _do(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def up(self) -> "Receiver":
        self._do(self._up())
        return self

    def down(self) -> "Receiver":
        self._do(self._down())
        return self

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def events(self, node: str | None = None) -> list[str]:
        return [b["event"] for b in self.bodies if node is None or b["node"] == node]


@pytest.fixture
def receiver():
    r = Receiver().up()
    yield r
    r.close()


async def until(predicate, what: str, timeout: float = 60):
    """Wait until ``predicate()`` holds (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await _holds(predicate):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def _holds(predicate) -> bool:
    result = predicate()
    return await result if asyncio.iscoroutine(result) else result


class Clock:
    def __init__(self, now: int):
        self.now = now

    def __call__(self) -> int:
        return self.now


# -- the judge, alone --------------------------------------------------------------------------------


def status(last_ts=T0, interval_s=300, vbat=None, halted=False, name="porch"):
    """A node as list_nodes gives it (``last_vbat`` as the telemetry adds it)."""
    return SimpleNamespace(name=name, last_ts=last_ts, interval_s=interval_s, halted=halted, last_vbat=vbat)


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("before, age_s, halted, after, events", [
    (None, 10, False, "ok", []),  # first judged and fine: nothing to say
    (None, 600, False, "late", [("late", None)]),
    ("ok", 600, False, "late", [("late", "ok")]),
    ("late", 900, False, "late", []),  # still late: said already
    ("late", 3600, False, "silent", [("silent", "late")]),
    ("ok", 7200, False, "silent", [("silent", "ok")]),  # late was never seen (the service was down): straight to silent
    ("silent", 10, False, "ok", [("ok", "silent")]),
    ("late", 10, False, "ok", [("ok", "late")]),
    ("never", 10, False, "ok", []),  # a first reading is no recovery
    ("halted", 10, False, "ok", []),
    ("ok", 600, True, "halted", []),  # halted makes no alert
    ("halted", 600, False, "late", [("late", "halted")]),  # resumed, and it has not sent since
])
def test_health_changes_make_alerts_only_for_late_silent_and_back_to_ok(before, age_s, halted, after, events):
    state, found = judge(status(), halted, AlertState(before), T0 + age_s * NS, 3.3)
    assert (state.health, found) == (after, events)


@pytest.mark.engines("sqlite")
def test_a_node_that_never_sent_is_never_and_makes_no_alert():
    state, found = judge(status(last_ts=None), False, None, T0, 3.3)
    assert (state, found) == (AlertState("never", None), [])


@pytest.mark.engines("sqlite")
def test_battery_low_below_the_threshold_and_ok_again_only_past_the_hysteresis():
    now, seen = T0 + NS, []
    state = None
    for vbat in (3.6, 3.29, 3.25, 3.31, None, 3.3 + BATTERY_HYSTERESIS_V - 0.01, 3.3 + BATTERY_HYSTERESIS_V, 3.2):
        state, found = judge(status(vbat=vbat), False, state, now, 3.3)
        seen.append((state.battery, [e for e in found if e[0].startswith("battery")]))
    assert seen == [
        ("ok", []),
        ("low", [("battery_low", "battery_ok")]),
        ("low", []),
        ("low", []),  # above the threshold, not past the hysteresis: no flapping
        ("low", []),  # a reading without a voltage changes nothing
        ("low", []),
        ("ok", [("battery_ok", "battery_low")]),
        ("low", [("battery_low", "battery_ok")]),
    ]
    assert judge(status(vbat=3.0), False, None, now, 3.3)[1] == [("battery_low", None)]  # first seen low: said


@pytest.mark.engines("sqlite")
def test_the_body_carries_every_documented_key_and_a_line_for_people(tmp_path):
    config = test_config(tmp_path)
    [change] = changes([status(vbat=3.1)], {"porch": AlertState("ok", "ok")}, config, False, T0 + 10 * MIN)
    assert change.before == AlertState("ok", "ok") and change.after == AlertState("late", "low")
    (late, late_body), (low, low_body) = change.alerts
    body = json.loads(late_body)
    assert (late, low) == ("late", "battery_low")
    assert set(body) == {"id", "node", "event", "health", "previous", "last_seen", "vbat", "threshold", "at", "text"}
    assert body == {
        "id": body["id"], "node": "porch", "event": "late", "health": "late", "previous": "ok",
        "last_seen": "2025-11-24T16:00:00.000000000Z", "vbat": 3.1, "threshold": 3.3,
        "at": "2025-11-24T16:10:00.000000000Z",
        "text": "tswarm: porch is late: last reading 2025-11-24 16:00 UTC, 10 min ago (expected every 5 min)",
    }
    assert json.loads(low_body)["text"] == "tswarm: porch's battery is low: 3.1 V (below 3.3 V)"
    assert json.loads(low_body)["previous"] == "battery_ok" and json.loads(low_body)["id"] != body["id"]


@pytest.mark.engines("sqlite")
def test_a_removed_node_is_forgotten_without_an_alert(tmp_path):
    found = changes([], {"gone": AlertState("late")}, test_config(tmp_path), False, T0)
    assert found == [AlertChange("gone", AlertState("late"), None)]


@pytest.mark.engines("sqlite")
def test_the_webhook_setting_takes_http_urls_and_never_quotes_one_back():
    assert Config.from_env({}).alert_webhook == ""
    url = "https://hooks.slack.com/services/T000/B000/secret"
    assert Config.from_env({"TSWARM_ALERT_WEBHOOK": f" {url} "}).alert_webhook == url
    with pytest.raises(ConfigError, match="TSWARM_ALERT_WEBHOOK must be an http") as err:
        Config.from_env({"TSWARM_ALERT_WEBHOOK": "ftp://example.com/secret-token"})
    assert "secret-token" not in str(err.value)
    assert "secret" not in repr(Config.from_env({"TSWARM_ALERT_WEBHOOK": url}))


# -- the room: state and outbox, on both engines --------------------------------------------------------


def test_a_change_applies_only_from_the_state_it_was_judged_from(journal):
    first = AlertChange("a", None, AlertState("late"), (("late", '{"n": 1}'),))
    assert journal.record_alert_changes([first], 10) == [first]
    assert journal.record_alert_changes([first], 11) == []  # a second judge with the same view: nothing twice
    stale = AlertChange("a", AlertState("ok"), AlertState("silent"), (("silent", "{}"),))
    assert journal.record_alert_changes([stale], 12) == []
    on = AlertChange("a", AlertState("late"), AlertState("silent", "low"), (("silent", '{"n": 2}'), ("battery_low", '{"n": 3}')))
    assert journal.record_alert_changes([on], 13) == [on]
    assert journal.alert_states() == {"a": AlertState("silent", "low")}
    assert journal.count_pending_alerts() == 3
    gone = AlertChange("a", AlertState("silent", "low"), None)
    assert journal.record_alert_changes([gone], 14) == [gone] and journal.alert_states() == {}


def test_pending_gives_each_nodes_oldest_alert_until_it_is_delivered(journal):
    journal.record_alert_changes([
        AlertChange("a", None, AlertState("late"), (("late", "a1"),)),
        AlertChange("b", None, AlertState("late"), (("late", "b1"),)),
    ], 10)
    journal.record_alert_changes([AlertChange("a", AlertState("late"), AlertState("silent"), (("silent", "a2"),))], 20)
    heads = journal.pending_alerts()
    assert [(p.node, p.event, p.body, p.created_at, p.attempts) for p in heads] == [
        ("a", "late", "a1", 10, 0), ("b", "late", "b1", 10, 0)]
    journal.alert_failed(heads[0].id, "HTTP 503", 30)
    assert [(p.body, p.attempts) for p in journal.pending_alerts()] == [("a1", 1), ("b1", 0)]
    journal.alert_delivered(heads[0].id, 40)
    assert [p.body for p in journal.pending_alerts()] == ["b1", "a2"]
    assert journal.count_pending_alerts() == 2
    assert journal.prune_alerts(41) == 1 and journal.count_pending_alerts() == 2  # undelivered ones stay


def test_alerts_and_states_survive_reopening(journal, data_dir):
    journal.record_alert_changes([AlertChange("a", None, AlertState("late"), (("late", "a1"),))], 10)
    with open_journal(data_dir) as again:
        assert again.alert_states() == {"a": AlertState("late")}
        assert [p.body for p in again.pending_alerts()] == ["a1"]


# -- judged and delivered, against the real receiver -------------------------------------------------


@pytest.fixture
async def alerts_on(tmp_path, journal, receiver):
    """``await alerts_on(**config)`` -> an :class:`Alerts` on the test's journal, posting to ``receiver``,
    its clock a :class:`Clock` at ``alerts.now`` (set ``.now.now``)."""
    made = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def make(**changes) -> Alerts:
        config = test_config(tmp_path, alert_webhook=receiver.url, alert_first_backoff_s=0.01, **changes)
        made.append(Alerts(config, session, now=Clock(T0)))
        return made[-1]

    yield make
    for alerts in made:
        alerts.close()
    await session.close()


async def drain(alerts: Alerts) -> None:
    """Deliver until nothing waits (retrying as the backoff allows)."""
    while await alerts.pending():
        await alerts.deliver()
        await asyncio.sleep(0.01)


async def test_late_then_silent_then_ok_is_one_post_each(journal, alerts_on, receiver):
    register(journal, "porch", created=True)
    add_readings(journal, "porch", [(T0, 21.5, 40.0)])
    alerts = await alerts_on()
    for minutes in (1, 2, 10, 11, 20, 61, 90):  # ok, ok, late, late, late, silent, silent
        alerts.now.now = T0 + minutes * MIN
        await alerts.check()
        await alerts.deliver()
    add_readings(journal, "porch", [(T0 + 95 * MIN, 21.0, 41.0)])
    for minutes in (95, 96, 97):
        alerts.now.now = T0 + minutes * MIN
        await alerts.check()
        await alerts.deliver()
    await drain(alerts)
    assert receiver.events() == ["late", "silent", "ok"]
    assert [(b["health"], b["previous"], b["at"]) for b in receiver.bodies] == [
        ("late", "ok", "2025-11-24T16:10:00.000000000Z"),
        ("silent", "late", "2025-11-24T17:01:00.000000000Z"),
        ("ok", "silent", "2025-11-24T17:35:00.000000000Z"),
    ]
    assert receiver.bodies[2]["last_seen"] == "2025-11-24T17:35:00.000000000Z"


async def test_a_receiver_down_for_a_while_gets_every_alert_once_in_order_per_node(journal, alerts_on, receiver):
    for name in ("a", "b"):
        register(journal, name, created=True)
    add_readings(journal, "a", [(T0, 20.0, 50.0)])
    add_readings(journal, "b", [(T0 + 1, 20.0, 50.0)])
    alerts = await alerts_on()
    receiver.down()
    for minutes in (1, 10, 61):  # ok; a and b late; a and b silent
        alerts.now.now = T0 + minutes * MIN
        await alerts.check()
        for _ in range(3):
            assert await alerts.deliver() == 0  # refused: kept
            await asyncio.sleep(0.02)
    add_readings(journal, "a", [(T0 + 62 * MIN, 20.0, 50.0)])
    alerts.now.now = T0 + 63 * MIN
    await alerts.check()
    assert await alerts.pending() == 5 and all(p.attempts > 0 for p in journal.pending_alerts())
    receiver.statuses = [503, 500, 404]  # up, but refusing at first: retried too
    receiver.up()
    await drain(alerts)
    assert receiver.events("a") == ["late", "silent", "ok"] and receiver.events("b") == ["late", "silent"]
    assert len(receiver.bodies) == 5 and len({b["id"] for b in receiver.bodies}) == 5
    await alerts.check()
    assert await alerts.deliver() == 0 and len(receiver.bodies) == 5


async def test_alerts_pending_when_the_service_stops_are_delivered_after_it_restarts(journal, alerts_on, receiver):
    register(journal, "porch", created=True)
    add_readings(journal, "porch", [(T0, 21.5, 40.0)])
    receiver.down()
    before = await alerts_on()
    before.now.now = T0 + 10 * MIN
    await before.check()
    assert await before.deliver() == 0
    before.close()  # the service stops with the alert pending
    receiver.up()
    after = await alerts_on()  # a new process: a new connection to the journal, nothing in memory
    after.now.now = T0 + 11 * MIN
    assert await after.check() == []  # still late: judged already, before the restart
    await drain(after)
    assert receiver.events() == ["late"]


async def test_a_battery_that_runs_low_and_is_charged_is_one_post_each(journal, alerts_on, receiver):
    """The voltage comes from the journal's newest reading (its telemetry, as a node sends it)."""
    register(journal, "porch", created=True)
    alerts = await alerts_on()
    for minute, vbat in enumerate((3.9, 3.5, 3.25, 3.31, 3.2, 4.1)):
        journal.add_readings([("porch", T0 + minute * MIN, 20.0, 50.0, ReadingExtra(vbat=vbat))])
        alerts.now.now = T0 + minute * MIN + NS
        await alerts.check()
    await drain(alerts)
    assert [(b["event"], b["vbat"], b["health"]) for b in receiver.bodies] == [
        ("battery_low", 3.25, "ok"), ("battery_ok", 4.1, "ok")]
    assert receiver.bodies[0]["text"] == "tswarm: porch's battery is low: 3.25 V (below 3.3 V)"


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(journal, alerts_on, receiver):
    register(journal, "porch", created=True)
    add_readings(journal, "porch", [(T0, 21.5, 40.0)])
    receiver.statuses = [301]
    alerts = await alerts_on()
    alerts.now.now = T0 + 10 * MIN
    await alerts.check()
    assert await alerts.deliver() == 0 and alerts.last_error.startswith("HTTP 301")
    [pending] = journal.pending_alerts()
    assert pending.attempts == 1
    await drain(alerts)
    assert receiver.events() == ["late"] and alerts.last_error is None



@pytest.mark.engines("sqlite")
async def test_a_refusing_webhook_is_one_line_without_its_urls_secret_and_credentials_go_as_utf8(
        aiohttp_server, tmp_path, journal, caplog):
    """A real receiver having a bad day: a redirect to https (the secret path in its Location), an HTML
    error page that echoes the path, then a 2xx. Nothing of the path, query or password reaches the
    log or the attempt's error, no traceback either, and the alert arrives once, with the URL's
    credentials as UTF-8 Basic auth."""
    answers = ["redirect", "html", "ok"]
    seen = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), await request.json()))
        answer = answers.pop(0)
        if answer == "redirect":
            return web.Response(status=301, headers={"Location": f"https://{request.host}{request.path_qs}"})
        if answer == "html":
            return web.Response(status=500, content_type="text/html", text=(
                f"<html><head><title>Internal Error</title></head><body>{request.path_qs} failed</body></html>"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/topic-0ce4nB1ue", hook)
    server = await aiohttp_server(app)
    url = f"http://porch-owner:p%C3%A4ss%E2%82%ACword@127.0.0.1:{server.port}/topic-0ce4nB1ue?auth=tk_s3cr3tvalue"
    register(journal, "porch", created=True)
    add_readings(journal, "porch", [(T0, 21.5, 40.0)])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        alerts = Alerts(test_config(tmp_path, alert_webhook=url, alert_first_backoff_s=0.01), session, now=Clock(T0))
        alerts.now.now = T0 + 10 * MIN
        await alerts.check()
        errors = []
        for _ in range(3):
            await alerts.deliver()
            errors.append(alerts.last_error)
            await asyncio.sleep(0.02)
        alerts.close()
    assert errors == [f"HTTP 301 to 127.0.0.1:{server.port}", "HTTP 500: Internal Error", None]
    assert [body["event"] for _, body in seen] == ["late"] * 3 and len({body["id"] for _, body in seen}) == 1
    assert {auth for auth, _ in seen} == {"Basic " + base64.b64encode("porch-owner:päss€word".encode()).decode()}
    for secret in ("0ce4nB1ue", "s3cr3t", "ss%E2", "päss", "€"):
        assert secret not in caplog.text and all(secret not in (e or "") for e in errors)
    assert not [r for r in caplog.records if r.exc_info]
    assert journal.count_pending_alerts() == 0

# -- inside the service: only the leader judges and sends ---------------------------------------------


async def test_the_service_sends_the_alerts_of_nodes_quiet_at_start(aiohttp_client, tmp_path, journal, receiver):
    register(journal, "late-one", created=True)
    register(journal, "quiet-one", created=True)
    now = time.time_ns()
    add_readings(journal, "late-one", [(now - 20 * MIN, 20.0, 50.0)])
    add_readings(journal, "quiet-one", [(now - 120 * MIN, 20.0, 50.0)])
    app = create_app(test_config(tmp_path, alert_webhook=receiver.url, alert_check_s=0.05))
    client = await aiohttp_client(app)
    await until(lambda: len(receiver.bodies) == 2, "two alerts")
    assert sorted((b["node"], b["event"]) for b in receiver.bodies) == [("late-one", "late"), ("quiet-one", "silent")]
    await until(lambda: journal.count_pending_alerts() == 0, "the marks")
    alerts = app[keys.LEADER].running["alerts"]
    await alerts.check()  # judged again: nothing changed, nothing more to send
    assert await alerts.deliver() == 0 and len(receiver.bodies) == 2
    await client.close()


async def test_without_a_webhook_nothing_is_judged(aiohttp_client, tmp_path, journal):
    register(journal, "porch", created=True)
    add_readings(journal, "porch", [(time.time_ns() - 120 * MIN, 20.0, 50.0)])
    app = create_app(test_config(tmp_path, alert_check_s=0.05))
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200
    assert "alerts" not in app[keys.LEADER].running and journal.alert_states() == {}
    await client.close()


@pytest.mark.engines("postgres")
async def test_on_postgresql_two_instances_send_each_alert_once(aiohttp_client, tmp_path, journal, receiver):
    """Two services on one database: one holds the singleton lock and alerts; the other only serves."""
    register(journal, "porch", created=True, password="pw-porch")
    register(journal, "attic", created=True)
    now = time.time_ns()
    add_readings(journal, "porch", [(now - 20 * MIN, 20.0, 50.0)])
    add_readings(journal, "attic", [(now - 120 * MIN, 20.0, 50.0)])
    apps = [create_app(test_config(tmp_path / name, alert_webhook=receiver.url, alert_check_s=0.05)) for name in "ab"]
    clients = [await aiohttp_client(app) for app in apps]
    await until(lambda: len(receiver.bodies) == 2 and journal.count_pending_alerts() == 0, "two alerts, marked")
    leading = [app[keys.LEADER].running.get("alerts") is not None for app in apps]
    assert sorted(leading) == [False, True]
    # porch sends a reading through the instance that does not lead: back to ok, one POST
    follower = clients[leading.index(False)]
    auth = "Basic " + base64.b64encode(b"porch:pw-porch").decode()
    resp = await follower.post("/api/nodes/porch", json={"name": "porch", "data": "21 50"}, headers={"Authorization": auth})
    assert resp.status == 202
    await until(lambda: len(receiver.bodies) == 3 and journal.count_pending_alerts() == 0, "the ok, marked")
    alerts = apps[leading.index(True)][keys.LEADER].running["alerts"]
    await alerts.check()  # judged again: nothing new to say
    assert await alerts.deliver() == 0
    assert Counter((b["node"], b["event"]) for b in receiver.bodies) == {
        ("porch", "late"): 1, ("attic", "silent"): 1, ("porch", "ok"): 1}
    for client in clients:
        await client.close()


# -- the schema step: a journal from before the alerts gains their room ----------------------------------


@pytest.mark.engines("sqlite")
def test_a_sqlite_journal_from_before_the_alerts_gains_their_room_and_keeps_its_readings(data_dir):
    import sqlite3

    from tswarm.storage.sqlite import SqliteStorage
    from tswarm.storage.sqlite import schema

    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "tswarm.db")
    before = schema.MIGRATIONS.index(schema._add_alerts)
    for migrate in schema.MIGRATIONS[:before]:
        migrate(conn)
    conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at) VALUES ('porch', 'h', 1, 2)")
    conn.execute("INSERT INTO readings (id, node_id, ts, temperature, humidity) VALUES (1, 1, 10, 21.5, 40.0)")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.commit()
    conn.close()
    with SqliteStorage.open(data_dir) as storage:
        assert [n.last_ts for n in storage.list_nodes()] == [10] and storage.alert_states() == {}
        change = AlertChange("porch", None, AlertState("late"), (("late", "{}"),))
        assert storage.record_alert_changes([change], 20) == [change] and storage.count_pending_alerts() == 1
        assert storage.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION


@pytest.mark.engines("postgres")
def test_a_postgresql_journal_from_before_the_alerts_gains_their_room_and_keeps_its_readings(postgres):
    import psycopg

    from tswarm.storage.postgres import PostgresStorage
    from tswarm.storage.postgres import schema

    url = postgres.new_database()
    before = schema.MIGRATIONS.index(schema._add_alerts)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for migrate in schema.MIGRATIONS[:before]:
            migrate(conn)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (%s)", (before,))
        conn.execute("INSERT INTO nodes (name, password_hash, registered_at, created_at) VALUES ('porch', 'h', 1, 2)")
        conn.execute("INSERT INTO readings (id, node_id, ts, temperature, humidity) VALUES (1, 1, 10, 21.5, 40.0)")
    with PostgresStorage(url) as storage:
        assert [n.last_ts for n in storage.list_nodes()] == [10] and storage.alert_states() == {}
        change = AlertChange("porch", None, AlertState("late"), (("late", "{}"),))
        assert storage.record_alert_changes([change], 20) == [change] and storage.count_pending_alerts() == 1
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(schema.SCHEMA_VERSION,)]
