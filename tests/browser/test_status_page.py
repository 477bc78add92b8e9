"""The status page in Debian's headless chromium, driven by Playwright (nothing downloaded: the
system browser is launched by path), against a real `tswarm serve`.

Screenshots go to test-output/ (gitignored) for a person to look at.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tswarm import auth
from tswarm.storage import ReadingExtra, open_storage
from tests.conftest import ENGINES, add_readings, journal_database, register
from tests.servers import IN_CI, ServiceProcess, request, tswarm_env

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
CHROMIUM = os.environ.get("TSWARM_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
NS = 1_000_000_000
PW = "node-pw-123"
READ = "page-read-token-123"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: make install")


def _need_chromium():
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (scripts/system-deps.sh installs Debian's chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def fill_journal(data_dir: Path, database_url: str = "") -> None:
    """kitchen ok, attic late, cellar silent, shed halted, porch registered and never seen. kitchen's
    newest reading came with battery, signal and wake time, attic's with a low battery and a weak
    signal; the others without telemetry."""
    now = time.time_ns()
    with open_storage(data_dir, database_url) as journal:
        for name in ("attic", "cellar", "kitchen", "porch", "shed"):
            register(journal, name, PW, created=name != "porch")
        day = [now - (288 - i) * 300 * NS + 30 * NS for i in range(288)]  # a day at 5-minute intervals
        add_readings(journal, "kitchen", [(ts, 20 + (i % 96) / 16, 45 + (i % 72) / 8) for i, ts in enumerate(day[:-1])])
        journal.add_readings([("kitchen", day[-1], 20 + 287 % 96 / 16, 45 + 287 % 72 / 8,
                               ReadingExtra(vbat=3.92, rssi=-58, awake_ms=812))])
        add_readings(journal, "shed", [(ts, 10 + (i % 48) / 12, 70 - (i % 36) / 6) for i, ts in enumerate(day)])
        journal.add_readings([("attic", now - 20 * 60 * NS, 24.5, 38.0, ReadingExtra(vbat=3.05, rssi=-81, lost=1))])
        add_readings(journal, "cellar", [(now - 3 * 3600 * NS, 12.0, 80.0)])
        journal.set_halt("shed", True)


@pytest.fixture(scope="module", params=ENGINES)
def service(request, tmp_path_factory):
    """The page's service on each engine in turn."""
    _need_chromium()
    data_dir = tmp_path_factory.mktemp("page") / "data"
    with journal_database(request, request.param) as database_url:
        fill_journal(data_dir, database_url)
        env = tswarm_env(data_dir, **({"TSWARM_DATABASE_URL": database_url} if database_url else {}))
        with ServiceProcess(data_dir, env=env) as svc:
            yield svc


@pytest.fixture(scope="module")
def browser():
    _need_chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Console:
    """Every console error and uncaught page error of one page."""

    def __init__(self, page):
        self.errors = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def canvas_ink(page, node: str) -> int:
    """How many pixels of the node's chart canvas are painted (not transparent)."""
    return page.eval_on_selector(
        f'.chart[data-node="{node}"] canvas',
        """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""",
    )


def post_reading(service, name: str, data: str, **fields) -> int:
    status, _, _ = request(
        "POST", f"{service.url}/api/nodes/{name}", json.dumps({"name": name, "data": data, **fields}),
        {"Authorization": " Basic " + auth.xauth(name, PW), "Content-Type": "application/json"},
    )
    return status


def latest(page, node: str) -> str:
    """The card's line of text with the latest values, as a person reads it (no hover)."""
    return page.inner_text(f'.chart[data-node="{node}"] .latest').replace("\n", " ")


def x_span_s(page, node: str) -> float:
    """How many seconds the node's chart shows."""
    return page.eval_on_selector(f'.chart[data-node="{node}"] .plot', "p => p.uplot.scales.x.max - p.uplot.scales.x.min")


def test_page_shows_every_node_with_health_and_charts_and_updates(service, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
    console = Console(page)
    page.goto(f"{service.url}/?refresh=1")
    page.wait_for_selector("body[data-refreshed]")

    rows = page.eval_on_selector_all("#nodes tbody tr", "rs => rs.map(r => [r.dataset.node, r.dataset.health])")
    assert rows == [["attic", "late"], ["cellar", "silent"], ["kitchen", "ok"], ["porch", "never"], ["shed", "halted"]]
    badges = page.eval_on_selector_all("#nodes .health", "bs => bs.map(b => b.textContent)")
    assert badges == ["late", "silent", "ok", "never seen", "halted"]
    assert page.text_content('#nodes tr[data-node="attic"] td.temperature') == "24.5 °C"
    assert page.text_content('#nodes tr[data-node="attic"] td.last-seen') == "20 min ago"
    assert re.search(r"updated \d{1,2}:\d{2}:\d{2}\s[AP]M$", page.text_content("#summary"))

    for node in ("kitchen", "shed", "attic"):
        assert canvas_ink(page, node) > 1000, node  # axes, grid and the data drawn
    # The latest values are text on each card, without hovering.
    assert latest(page, "attic") == "24.5 °C 38.0 % 20 min ago"
    assert latest(page, "cellar") == "12.0 °C 80.0 % 3 h ago"
    # Minutes of data fill the chart; a day of data shows the day.
    assert 20 * 60 < x_span_s(page, "attic") < 25 * 60
    assert 3 * 3600 < x_span_s(page, "cellar") < 3.5 * 3600
    assert x_span_s(page, "kitchen") == 86400
    # A node without readings: a small card with its name, health and "no readings yet".
    porch = '.chart[data-node="porch"]'
    assert page.query_selector(f"{porch} canvas") is None
    assert page.text_content(f"{porch} .name") == "porch"
    assert page.text_content(f"{porch} .health") == "never seen"
    assert latest(page, "porch") == "no readings yet"
    assert page.eval_on_selector(porch, "c => c.getBoundingClientRect().height") < 100
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT / "status-page.png", full_page=True)

    # Hovering a chart shows that point's values and time in the same line; leaving it, the latest again.
    page.hover('.chart[data-node="kitchen"] .u-over')  # scrolled into view, the pointer in its middle
    page.wait_for_selector('.chart[data-node="kitchen"] .latest[data-hover]')
    assert "ago" not in latest(page, "kitchen")
    page.mouse.move(0, 0)
    page.wait_for_selector('.chart[data-node="kitchen"] .latest:not([data-hover])')
    assert latest(page, "kitchen").endswith("min ago")

    # A new reading arrives: the page picks it up without a reload, and the small card grows a chart.
    assert post_reading(service, "porch", "31.5 12.5") == 202
    page.wait_for_function(
        """() => document.querySelector('#nodes tr[data-node="porch"]').dataset.health === 'ok'""", timeout=15_000
    )
    assert page.text_content('#nodes tr[data-node="porch"] td.temperature') == "31.5 °C"
    assert page.text_content('#nodes tr[data-node="porch"] td.humidity') == "12.5 %"
    page.wait_for_selector(f"{porch} canvas", timeout=15_000)
    assert latest(page, "porch").startswith("31.5 °C 12.5 % ")
    assert x_span_s(page, "porch") == 600  # seconds of data: the shortest window, ten minutes
    page.screenshot(path=OUTPUT / "status-page-updated.png", full_page=True)
    assert console.errors == []
    page.close()


def test_page_reads_on_a_phone(service, browser):
    database_url = service.env.get("TSWARM_DATABASE_URL", "")
    with open_storage(service.data_dir, database_url) as journal:  # a node that never sent (porch has by now)
        journal.add_node("garage", auth.hash_password(PW, n=2**10))
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    console = Console(page)
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-refreshed]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    widest = page.eval_on_selector_all(".chart, .chart canvas", "es => Math.max(...es.map(e => e.getBoundingClientRect().right))")
    assert widest <= 390
    assert not page.is_visible("#nodes")  # the cards carry what the table has
    for node in ("attic", "cellar", "kitchen", "shed"):
        for part in ("temperature", "humidity", "age"):
            assert page.is_visible(f'.chart[data-node="{node}"] .latest .{part}'), (node, part)
    assert latest(page, "attic") == "24.5 °C 38.0 % 20 min ago"
    assert page.is_visible('.chart[data-node="garage"].small .health')
    assert page.text_content('.chart[data-node="garage"] .health') == "never seen"
    assert latest(page, "garage") == "no readings yet"
    assert canvas_ink(page, "kitchen") > 1000
    page.screenshot(path=OUTPUT / "status-page-phone.png", full_page=True)
    assert console.errors == []
    page.close()


def test_page_follows_the_browsers_locale(service, browser):
    context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-refreshed]")
    assert page.text_content('#nodes tr[data-node="attic"] td.temperature') == "24,5 °C"
    assert latest(page, "attic") == "24,5 °C 38,0 % 20 min ago"
    summary = page.text_content("#summary")
    assert re.search(r"updated \d{1,2}:\d{2}:\d{2}$", summary), summary  # 24-hour clock, no AM/PM
    title = page.get_attribute('#nodes tr[data-node="attic"] td.last-seen', "title")
    assert re.fullmatch(r"\d{2}\.\d{2}\.\d{4}, \d{2}:\d{2}:\d{2}", title), title
    page.screenshot(path=OUTPUT / "status-page-de.png", full_page=True)
    context.close()


def test_page_shows_the_firmware_each_node_runs_and_how_its_update_went(service, browser):
    """kitchen updated, attic rolled back, cellar pending, shed on a version it reported, porch never
    reported (old firmware): the table's Firmware column and each card say so; on a phone the cards do."""
    from tswarm import bundles

    files = [("node.py", b"print('v2')\n")]
    v2 = bundles.version_of(files)
    now = time.time_ns()
    with open_storage(service.data_dir, service.env.get("TSWARM_DATABASE_URL", "")) as journal:
        journal.add_bundle(v2, files, now)
        journal.stage_bundle(v2, ["kitchen", "attic", "cellar"], now)
        for name in ("kitchen", "attic", "cellar"):
            journal.report_firmware(name, "v1", None, now)
        journal.report_firmware("shed", "v1", None, now)
        journal.report_firmware("kitchen", v2, None, now + 1)
        journal.report_firmware("attic", "v1", v2, now + 2)
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
    console = Console(page)
    page.goto(f"{service.url}/")
    page.wait_for_selector("body[data-refreshed]")

    def column(node):
        return page.text_content(f'#nodes tr[data-node="{node}"] td.firmware')

    assert page.eval_on_selector_all("#nodes th", "hs => hs.map(h => h.textContent)")[-1] == "Firmware"
    assert column("kitchen").startswith(f"{v2}updated ")
    assert column("attic").startswith(f"v1rolled back from {v2} ")
    assert column("cellar") == f"v1update pending ({v2})"
    assert column("shed") == "v1"
    assert column("porch") == ""
    outcomes = dict(page.eval_on_selector_all(
        "#nodes tr", "rs => rs.slice(1).map(r => [r.dataset.node, r.querySelector('td.firmware').dataset.outcome])"))
    assert {n: outcomes[n] for n in ("attic", "cellar", "kitchen", "porch", "shed")} == {
        "attic": "rolled_back", "cellar": "pending", "kitchen": "updated", "porch": "current", "shed": "current"}
    assert page.get_attribute('#nodes tr[data-node="attic"] .outcome', "title").startswith(f"rolled back from {v2} 20")
    page.screenshot(path=OUTPUT / "status-page-firmware.png", full_page=True)
    page.close()

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    phone.goto(f"{service.url}/")
    phone.wait_for_selector("body[data-refreshed]")
    assert not phone.is_visible("#nodes")
    card = '.chart[data-node="attic"] .firmware'
    assert phone.is_visible(card) and phone.inner_text(card).replace("\n", " ").startswith(f"v1 rolled back from {v2} ")
    assert not phone.is_visible('.chart[data-node="porch"] .firmware')  # nothing to say: no line
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=OUTPUT / "status-page-firmware-phone.png", full_page=True)
    phone.close()
    assert console.errors == []


def test_page_shows_battery_and_signal_per_node_and_marks_a_low_battery(service, browser):
    """TSWARM_BATTERY_LOW_V is 3.3 (the default): attic's 3.05 V is low, in colour and in words."""
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
    console = Console(page)
    page.goto(f"{service.url}/?refresh=1")
    page.wait_for_selector("body[data-refreshed]")

    def cells(part):
        return {n: page.text_content(f'#nodes tr[data-node="{n}"] td.{part}') for n in ("attic", "cellar", "kitchen")}

    assert page.eval_on_selector_all("#nodes th", "hs => hs.map(h => h.textContent)")[2:6] == [
        "Temperature", "Humidity", "Battery", "Signal"]
    assert cells("battery") == {"attic": "3.05 V low", "cellar": "–", "kitchen": "3.92 V"}
    assert cells("signal") == {"attic": "-81 dBm", "cellar": "–", "kitchen": "-58 dBm"}
    low = page.eval_on_selector_all("#nodes td.battery.low", "ts => ts.map(t => t.closest('tr').dataset.node)")
    assert low == ["attic"]
    red = page.eval_on_selector('#nodes tr[data-node="attic"] td.battery', "t => getComputedStyle(t).color")
    plain = page.eval_on_selector('#nodes tr[data-node="kitchen"] td.battery', "t => getComputedStyle(t).color")
    assert red != plain
    # The cards say it too (a phone shows only them); a node without telemetry has no such line.
    telemetry = lambda node: page.inner_text(f'.chart[data-node="{node}"] .telemetry').replace("\n", " ")  # noqa: E731
    assert telemetry("kitchen") == "battery 3.92 V signal -58 dBm awake 0.8 s"
    assert telemetry("attic") == "battery 3.05 V low signal -81 dBm"
    assert page.is_visible('.chart[data-node="attic"] .telemetry .battery.low .flag')
    assert not page.is_visible('.chart[data-node="cellar"] .telemetry')
    assert latest(page, "attic") == "24.5 °C 38.0 % 20 min ago"  # the readings' line is as before
    page.screenshot(path=OUTPUT / "status-page-battery.png", full_page=True)

    # A new reading with a good battery: the mark goes, without a reload.
    assert post_reading(service, "attic", "24.0 39.0", vbat=3.71, rssi=-60) == 202
    page.wait_for_function(
        """() => document.querySelector('#nodes tr[data-node="attic"] td.battery').textContent === '3.71 V'""",
        timeout=15_000,
    )
    assert page.query_selector_all("#nodes td.battery.low") == []
    # A reading the node kept through an outage arrives with an older time: the chart gets it too. The
    # table is drawn before the cards: first the refresh that drew 3.71 V ends, its chart has that reading.
    drawn = int(page.eval_on_selector("body", "b => b.dataset.refreshed"))
    page.wait_for_function(f"() => Number(document.body.dataset.refreshed) > {drawn}", timeout=15_000)
    points = lambda: page.eval_on_selector('.chart[data-node="attic"] .plot', "p => p.uplot.data[0].length")  # noqa: E731
    before = points()
    assert post_reading(service, "attic", "23.0 40.0", age=600) == 202
    page.wait_for_function(
        f"""() => document.querySelector('.chart[data-node="attic"] .plot').uplot.data[0].length === {before + 1}""",
        timeout=15_000,
    )
    times = page.eval_on_selector('.chart[data-node="attic"] .plot', "p => p.uplot.data[0]")
    assert times == sorted(times)
    assert console.errors == []
    page.close()


def test_battery_voltage_follows_the_browsers_locale(service, browser):
    context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-refreshed]")
    assert page.text_content('#nodes tr[data-node="kitchen"] td.battery') == "3,92 V"
    assert page.inner_text('.chart[data-node="kitchen"] .telemetry .awake') == "awake 0,8 s"
    context.close()


@pytest.fixture(scope="module")
def guarded_service(tmp_path_factory):
    _need_chromium()
    data_dir = tmp_path_factory.mktemp("guarded") / "data"
    fill_journal(data_dir)
    with ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_READ_TOKEN=READ)) as svc:
        yield svc


def test_page_asks_for_the_read_token_once_and_keeps_it(guarded_service, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(guarded_service.url + "/")
    page.wait_for_selector("#token-dialog[open]")
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button")
    page.wait_for_selector("#token-dialog[open] #token-error:not([hidden])")  # refused: asked again
    page.fill("#token-input", READ)
    page.click("#token-form button")
    page.wait_for_selector("body[data-refreshed]")
    assert len(page.query_selector_all("#nodes tbody tr")) == 5
    assert page.evaluate("localStorage.getItem('tswarm.readToken')") == READ

    again = context.new_page()  # same browser profile: the token is kept
    console = Console(again)
    again.goto(guarded_service.url + "/")
    again.wait_for_selector("body[data-refreshed]")
    assert again.eval_on_selector("#token-dialog", "d => d.open") is False
    assert len(again.query_selector_all("#nodes tbody tr")) == 5
    assert console.errors == []
    context.close()


LAN = {"X-Forwarded-For": "192.168.1.77"}


@pytest.fixture(scope="module")
def lan_service(tmp_path_factory):
    """A first `tswarm serve` with no read token, as on a fresh Pi. The tests may only serve on
    loopback, so the browser plays a phone on the LAN the one way the service believes: through a
    trusted proxy (TSWARM_TRUSTED_PROXIES=127.0.0.1) that names the client in X-Forwarded-For. Then
    ``request.remote`` is 192.168.1.77 and the request is not loopback (service/access.py)."""
    _need_chromium()
    data_dir = tmp_path_factory.mktemp("lan") / "data"
    fill_journal(data_dir)
    # the access log on: the test reads its line of /?token= (masked)
    with ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_TRUSTED_PROXIES="127.0.0.1", TSWARM_ACCESS_LOG="1")) as svc:
        yield svc


def test_a_phone_on_the_lan_opens_the_printed_url_and_reads(lan_service, browser):
    printed = re.findall(r"^    (http://\S+/\?token=(\S+))$", lan_service.log(), re.MULTILINE)
    assert len(printed) == 1, lan_service.log()
    url, token = printed[0]
    assert url == f"{lan_service.url}/?token={token}"  # --host 127.0.0.1: that host
    assert token == (lan_service.data_dir / "read-token").read_text().strip()
    phone = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)

    # Without the token the LAN gets nothing: the page asks for it.
    stranger = browser.new_context(extra_http_headers=LAN, **phone)
    page = stranger.new_page()
    page.goto(lan_service.url + "/")
    page.wait_for_selector("#token-dialog[open]")
    assert page.query_selector_all("#nodes tbody tr") == []
    stranger.close()

    # With the printed URL (its host is the LAN address; the test reaches the same service on loopback).
    context = browser.new_context(extra_http_headers=LAN, **phone)
    page = context.new_page()
    console = Console(page)
    response = page.goto(f"{lan_service.url}/?refresh=5&token={token}")
    assert response.request.redirected_from is not None  # the 303 to the page without the token
    assert page.url == f"{lan_service.url}/?refresh=5"
    page.wait_for_selector("body[data-refreshed]")
    assert len(page.query_selector_all(".chart")) == 5
    assert latest(page, "attic") == "24.5 °C 38.0 % 20 min ago"
    assert page.eval_on_selector("#token-dialog", "d => d.open") is False
    (cookie,) = context.cookies()
    assert (cookie["name"], cookie["value"], cookie["httpOnly"], cookie["sameSite"]) == ("tswarm_read", token, True, "Strict")
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script on the page can read it
    assert page.evaluate("localStorage.getItem('tswarm.readToken')") is None
    assert token not in page.evaluate("JSON.stringify(history.state) + location.href")
    page.reload()
    page.wait_for_selector("body[data-refreshed]")
    assert len(page.query_selector_all(".chart")) == 5
    page.screenshot(path=OUTPUT / "status-page-phone-lan.png", full_page=True)
    assert console.errors == []

    wrong = context.new_page()
    assert wrong.goto(f"{lan_service.url}/?token=not-{token}").status == 401
    context.close()

    lines = ('"GET /?refresh=5&token=*** HTTP/1.1" 303', '"GET /?token=*** HTTP/1.1" 401')
    deadline = time.monotonic() + 10  # the access line is written after the answer went out: it may lag the browser
    while not all(line in (log := lan_service.log()) for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.count(token) == 1  # printed once at the start; never in the access log
    for line in lines:
        assert line in log
