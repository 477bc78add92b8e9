"""The status page in Debian's headless chromium, driven by Playwright (nothing downloaded: the
system browser is launched by path), against a real `tswarm serve`.

Screenshots go to test-output/ (gitignored) for a person to look at.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tswarm import auth
from tswarm.journal import Journal
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


def fill_journal(data_dir: Path) -> None:
    """kitchen ok, attic late, cellar silent, shed halted, porch registered and never seen."""
    now = time.time_ns()
    with Journal.open(data_dir) as journal:
        for name in ("attic", "cellar", "kitchen", "porch", "shed"):
            journal.add_node(name, auth.hash_password(PW, n=2**10))
        journal.conn.execute("UPDATE nodes SET created_at = 1 WHERE name != 'porch'")
        ids = {name: i for i, name in journal.conn.execute("SELECT id, name FROM nodes")}
        rows = []
        for i in range(288):  # a day at 5-minute intervals, a gentle daily swing
            ts = now - (288 - i) * 300 * NS + 30 * NS
            rows.append((ids["kitchen"], ts, 20 + (i % 96) / 16, 45 + (i % 72) / 8))
            rows.append((ids["shed"], ts, 10 + (i % 48) / 12, 70 - (i % 36) / 6))
        rows.append((ids["attic"], now - 20 * 60 * NS, 24.5, 38.0))
        rows.append((ids["cellar"], now - 3 * 3600 * NS, 12.0, 80.0))
        journal.conn.execute("BEGIN")
        journal.conn.executemany("INSERT INTO readings (node_id, ts, temperature, humidity) VALUES (?, ?, ?, ?)", rows)
        journal.conn.execute("COMMIT")
        journal.set_halt("shed", True)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    _need_chromium()
    data_dir = tmp_path_factory.mktemp("page") / "data"
    fill_journal(data_dir)
    with ServiceProcess(data_dir) as svc:
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


def post_reading(service, name: str, data: str) -> int:
    status, _, _ = request(
        "POST", f"{service.url}/api/nodes/{name}", json.dumps({"name": name, "data": data}),
        {"Authorization": " Basic " + auth.xauth(name, PW), "Content-Type": "application/json"},
    )
    return status


def test_page_shows_every_node_with_health_and_charts_and_updates(service, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    console = Console(page)
    page.goto(f"{service.url}/?refresh=1")
    page.wait_for_selector("body[data-refreshed]")

    rows = page.eval_on_selector_all("#nodes tbody tr", "rs => rs.map(r => [r.dataset.node, r.dataset.health])")
    assert rows == [["attic", "late"], ["cellar", "silent"], ["kitchen", "ok"], ["porch", "never"], ["shed", "halted"]]
    badges = page.eval_on_selector_all("#nodes .health", "bs => bs.map(b => b.textContent)")
    assert badges == ["late", "silent", "ok", "never seen", "halted"]
    assert page.text_content('#nodes tr[data-node="attic"] td.temperature') == "24.5 °C"
    assert page.text_content('#nodes tr[data-node="attic"] td.last-seen') == "20 min ago"

    for node in ("kitchen", "shed", "attic"):
        assert canvas_ink(page, node) > 1000, node  # axes, grid and two lines drawn
    assert page.text_content('.chart[data-node="porch"] .empty') == "no readings in the last 24 hours"
    assert page.query_selector('.chart[data-node="porch"] canvas') is None
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT / "status-page.png", full_page=True)

    # A new reading arrives: the page picks it up without a reload.
    assert post_reading(service, "porch", "31.5 12.5") == 202
    page.wait_for_function(
        """() => document.querySelector('#nodes tr[data-node="porch"]').dataset.health === 'ok'""", timeout=15_000
    )
    assert page.text_content('#nodes tr[data-node="porch"] td.temperature') == "31.5 °C"
    assert page.text_content('#nodes tr[data-node="porch"] td.humidity') == "12.5 %"
    page.wait_for_selector('.chart[data-node="porch"] canvas', timeout=15_000)
    assert page.query_selector('.chart[data-node="porch"] .empty') is None
    page.screenshot(path=OUTPUT / "status-page-updated.png", full_page=True)
    assert console.errors == []
    page.close()


def test_page_reads_on_a_phone(service, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    console = Console(page)
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-refreshed]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    assert page.eval_on_selector("#nodes thead", "h => getComputedStyle(h).display") == "none"  # cards, not columns
    assert canvas_ink(page, "kitchen") > 1000
    page.screenshot(path=OUTPUT / "status-page-phone.png", full_page=True)
    assert console.errors == []
    page.close()


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
