"""Alerts: a JSON POST to ``TSWARM_ALERT_WEBHOOK`` when a node goes quiet, comes back, or its battery runs low.

Two halves, run by the leader (service/leader.py: the one process of all on the journal that forwards
and prunes), only when the webhook is set:

- **the judge** (:func:`judge`, every :attr:`Config.alert_check_s`): every registered node's health, as
  ``GET /api/nodes`` judges it (service/health.py), and its battery (the newest reading's ``vbat``
  against ``TSWARM_BATTERY_LOW_V``). A change makes alerts: health turning ``late`` or ``silent``,
  ``ok`` again after either, the battery falling below the threshold (``battery_low``) and rising
  back to it plus :data:`BATTERY_HYSTERESIS_V` (``battery_ok``). ``halted`` and ``never`` make none.
  The new state and its alerts commit in one transaction (:meth:`Storage.record_alert_changes`):
  nothing judged is lost or alerted twice, whatever stops the process.
- **the deliverer** (:meth:`Alerts.deliver`): POSTs the oldest undelivered alert of each node (so
  in order per node), marks it delivered on a 2xx, and on anything else (a refused connection, a
  timeout, a 3xx, 4xx or 5xx) tries it again after :attr:`Config.alert_first_backoff_s`, doubling up
  to :data:`MAX_BACKOFF_S`. An alert stays in the journal until delivered, across restarts.

Delivery is at least once: a crash between the receiver's 2xx and the mark sends that alert again
after the restart, with the same ``"id"``, so a receiver can drop the repeat (docs/alerts.md).
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterable, Optional

import aiohttp
import yarl
from aiohttp import web

from . import keys
from .health import health
from .nodes import is_halted
from .settings import Config
from .storage import AlertChange, AlertState, NodeStatus, PendingAlert, Storage, StorageUnavailable, storage_for
from .timefmt import rfc3339

log = logging.getLogger("tswarm.alerts")

EVENTS = ("late", "silent", "ok", "battery_low", "battery_ok")
BATTERY_LOW_V = 3.3  # TSWARM_BATTERY_LOW_V's default, until that setting reads it
BATTERY_HYSTERESIS_V = 0.1  # a low battery is ok again at the threshold plus this (no alert per ADC jitter)
MAX_BACKOFF_S = 300.0  # the longest wait between two attempts of one alert
TIMEOUT_S = 10.0  # one POST, connecting included
AT_ONCE = 8  # POSTs in flight at most (each to a different node's alert)
KEEP_DELIVERED_S = 30 * 86400  # delivered alerts are forgotten after this
BODY_PREVIEW = 200  # characters of a refusing receiver's answer kept as the attempt's error

NS = 1_000_000_000


def battery_threshold(config: Config) -> float:
    """Volts below which a battery is low: ``TSWARM_BATTERY_LOW_V``."""
    return float(getattr(config, "battery_low_v", BATTERY_LOW_V))


# -- the judge ------------------------------------------------------------------------------------


def _battery(vbat: Optional[float], before: Optional[str], threshold: float) -> Optional[str]:
    if vbat is None:
        return before  # a reading without a voltage says nothing about the battery
    if vbat < threshold:
        return "low"
    if before == "low" and vbat < threshold + BATTERY_HYSTERESIS_V:
        return "low"
    return "ok"


def judge(node: NodeStatus, halted: bool, before: Optional[AlertState], now_ns: int,
          threshold: float) -> tuple[AlertState, list[tuple[str, Optional[str]]]]:
    """Node ``node``'s state at ``now_ns`` and the events its change from ``before`` makes, in order:
    ``(event, previous)``, ``previous`` the same kind's value before (a health, ``battery_low`` /
    ``battery_ok``; None: not judged before)."""
    was = before or AlertState()
    now_health = health(now_ns, node.last_ts, node.interval_s, halted)
    battery = _battery(node.last_vbat, was.battery, threshold)
    events: list[tuple[str, Optional[str]]] = []
    if now_health != was.health:
        if now_health in ("late", "silent") or (now_health == "ok" and was.health in ("late", "silent")):
            events.append((now_health, was.health))
    if battery != was.battery:
        previous = None if was.battery is None else f"battery_{was.battery}"
        if battery == "low":
            events.append(("battery_low", previous))
        elif was.battery == "low":
            events.append(("battery_ok", previous))
    return AlertState(now_health, battery), events


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def _when(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts_ns // NS))


def alert_text(node: NodeStatus, event: str, vbat: Optional[float], threshold: float, now_ns: int) -> str:
    """The one line for people (Slack shows it as is)."""
    seen = "" if node.last_ts is None else f"{_when(node.last_ts)}, {_ago((now_ns - node.last_ts) / NS)} ago"
    if event == "late":
        return f"tswarm: {node.name} is late: last reading {seen} (expected every {_ago(node.interval_s)})"
    if event == "silent":
        return f"tswarm: {node.name} is silent: nothing since {seen}"
    if event == "ok":
        return f"tswarm: {node.name} is back: reading at {_when(node.last_ts)}"
    if event == "battery_low":
        return f"tswarm: {node.name}'s battery is low: {vbat:g} V (below {threshold:g} V)"
    return f"tswarm: {node.name}'s battery is ok again: {vbat:g} V"


def alert_body(node: NodeStatus, event: str, state: AlertState, previous: Optional[str], threshold: float,
               now_ns: int, alert_id: Optional[str] = None) -> dict:
    """The JSON body of one alert (docs/alerts.md)."""
    vbat = node.last_vbat
    return {
        "id": alert_id or uuid.uuid4().hex,
        "node": node.name,
        "event": event,
        "health": state.health,
        "previous": previous,
        "last_seen": None if node.last_ts is None else rfc3339(node.last_ts),
        "vbat": vbat,
        "threshold": threshold,
        "at": rfc3339(now_ns),
        "text": alert_text(node, event, vbat, threshold, now_ns),
    }


def changes(nodes: Iterable[NodeStatus], states: dict[str, AlertState], config: Config, halted_all: bool,
            now_ns: int) -> list[AlertChange]:
    """Every node's change since ``states`` (nodes no longer registered are forgotten, silently)."""
    threshold = battery_threshold(config)
    found, registered = [], set()
    for node in nodes:
        registered.add(node.name)
        before = states.get(node.name)
        after, events = judge(node, is_halted(node, config, halted_all), before, now_ns, threshold)
        if after == before:
            continue
        bodies = tuple((event, json.dumps(alert_body(node, event, after, previous, threshold, now_ns)))
                       for event, previous in events)
        found.append(AlertChange(node.name, before, after, bodies))
    found += [AlertChange(name, state, None) for name, state in states.items() if name not in registered]
    return found


def check(journal: Storage, config: Config, now_ns: int) -> list[AlertChange]:
    """Judge every node at ``now_ns`` and commit what changed with its alerts; the changes applied."""
    states = journal.alert_states()
    halted_all = journal.halted_all()
    found = changes(journal.list_nodes(), states, config, halted_all, now_ns)
    return journal.record_alert_changes(found, now_ns) if found else []


# -- the deliverer --------------------------------------------------------------------------------


class Alerts:
    """The judge and the deliverer of one leader, on a journal connection and thread of their own.

    ``now`` is the clock the judge reads (tests drive it); the backoff runs on the event loop's."""

    def __init__(self, config: Config, session: aiohttp.ClientSession, *,
                 now: Callable[[], int] = time.time_ns, open_journal: Optional[Callable[[], Storage]] = None):
        self.config = config
        self.url = config.alert_webhook
        self._target, self._headers = _split_credentials(self.url)
        self._secrets = _secrets_of(self.url)
        self.session = session
        self.now = now
        self.check_s = config.alert_check_s
        self.first_backoff_s = config.alert_first_backoff_s
        self._open = open_journal or (lambda: storage_for(config))
        self._journal: Optional[Storage] = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
        self._retry_at: dict[int, float] = {}  # alert id -> loop time of its next attempt
        self._unmarked: set[int] = set()  # delivered, but the journal did not take the mark yet
        self._judging = asyncio.Lock()
        self._delivering = asyncio.Lock()
        self.wake = asyncio.Event()  # set when alerts were queued: the deliverer looks at once
        self.delivered = 0  # POSTs answered 2xx, since this leader started
        self.last_error: Optional[str] = None  # of the latest failed attempt, None once one succeeds
        self._away: Optional[str] = None
        self._closed = False

    async def _call(self, fn, *args):
        def run():
            if self._journal is None:
                self._journal = self._open()
            return fn(self._journal, *args)

        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    def close(self) -> None:
        """Close the journal connection (in its thread, after what is under way there); twice is once."""
        if self._closed:
            return
        self._closed = True

        def shut():
            if self._journal is not None:
                self._journal.close()

        self._thread.submit(shut)
        self._thread.shutdown(wait=False)

    async def check(self) -> list[AlertChange]:
        """Judge every node now (``self.now()``) and queue what changed; wakes the deliverer."""
        async with self._judging:
            applied = await self._call(check, self.config, self.now())
        if any(change.alerts for change in applied):
            self.wake.set()
        return applied

    async def pending(self) -> int:
        return await self._call(lambda journal: journal.count_pending_alerts())

    async def deliver(self) -> int:
        """One round: POST each node's next alert whose backoff has passed; how many were delivered."""
        async with self._delivering:
            loop = asyncio.get_running_loop()
            for alert_id in list(self._unmarked):  # a mark the journal missed: never POSTed again meanwhile
                await self._call(lambda j, i=alert_id: j.alert_delivered(i, self.now()))
                self._unmarked.discard(alert_id)
            heads = await self._call(lambda journal: journal.pending_alerts())
            due = [a for a in heads if self._retry_at.get(a.id, 0.0) <= loop.time()]
            gate = asyncio.Semaphore(AT_ONCE)

            async def one(alert: PendingAlert) -> bool:
                async with gate:
                    return await self._deliver_one(alert)

            results = await asyncio.gather(*(one(a) for a in due))
            return sum(results)

    async def _deliver_one(self, alert: PendingAlert) -> bool:
        error = await self._post(alert.body)
        loop = asyncio.get_running_loop()
        if error is None:
            self._retry_at.pop(alert.id, None)
            self.delivered += 1
            if self.last_error is not None:
                log.info("the alert webhook takes alerts again")
            self.last_error = None
            self._unmarked.add(alert.id)
            await self._call(lambda j: j.alert_delivered(alert.id, self.now()))
            self._unmarked.discard(alert.id)
            return True
        attempts = alert.attempts + 1
        wait = min(MAX_BACKOFF_S, self.first_backoff_s * 2 ** min(attempts - 1, 30))
        self._retry_at[alert.id] = loop.time() + wait
        if self.last_error is None:
            log.warning("the alert webhook refused an alert of %s (%s); trying again, waiting up to %g s",
                        alert.node, error, MAX_BACKOFF_S)
        self.last_error = error
        await self._call(lambda j: j.alert_failed(alert.id, error, self.now()))
        return False

    async def _post(self, body: str) -> Optional[str]:
        """POST ``body``; None when the receiver answered 2xx, else what went wrong, in one line that
        names the host and port at most (the URL's path, query and credentials are often its secret)."""
        try:
            async with self.session.post(
                self._target, data=body.encode(), headers=self._headers, allow_redirects=False,
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                where = f" to {_host_port(resp.headers.get('Location'))}" if 300 <= resp.status < 400 else ""
                text = _preview(await resp.content.read(BODY_PREVIEW * 20), resp.headers.get("Content-Type", ""))
                return self._scrub(f"HTTP {resp.status}{where}" + (f": {text}" if text else ""))
        except asyncio.TimeoutError:
            return f"no answer within {TIMEOUT_S:g} s"
        except aiohttp.ClientError as exc:
            return self._scrub(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a URL aiohttp cannot send (its host, its credentials): a failure, not a traceback
            return self._scrub(f"{type(exc).__name__}: {exc}")

    def _scrub(self, text: str) -> str:
        """``text`` without any part of the URL that may be its secret."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:BODY_PREVIEW * 2]

    def _next_wait(self) -> float:
        """Seconds until the earliest retry due (the judge's interval at most)."""
        if not self._retry_at:
            return self.check_s
        soonest = min(self._retry_at.values()) - asyncio.get_running_loop().time()
        return max(0.0, min(self.check_s, soonest))

    async def _judging_loop(self) -> None:
        pruned_at = 0.0
        while True:
            try:
                await self.check()
                if time.monotonic() - pruned_at > 3600:
                    await self._call(lambda j: j.prune_alerts(self.now() - KEEP_DELIVERED_S * NS))
                    pruned_at = time.monotonic()
                self._away = None
            except StorageUnavailable as exc:
                self._said_away(exc)
            except Exception:
                log.exception("judging the nodes for alerts failed; trying again")
            await asyncio.sleep(self.check_s)

    async def _delivering_loop(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.deliver()
            except StorageUnavailable as exc:
                self._said_away(exc)
            except Exception:
                log.exception("delivering alerts failed; trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(self._next_wait()):
                    await self.wake.wait()

    def _said_away(self, exc: StorageUnavailable) -> None:
        if str(exc) != self._away:
            log.warning("the alerts wait for the journal, trying again: %s", exc)
            self._away = str(exc)

    async def run(self) -> None:
        """Judge and deliver until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._judging_loop(), name="alerts-judge")
            group.create_task(self._delivering_loop(), name="alerts-deliver")


# -- the webhook's URL: its secret stays out of errors and the log ------------------------------------


def _split_credentials(url: str) -> tuple[yarl.URL, dict[str, str]]:
    """The URL to POST to without its credentials, and the headers of the POST: those as Basic auth
    (UTF-8: a password of any characters, as ntfy and most receivers read it; aiohttp's own latin-1
    fails on a euro sign, with a traceback at every attempt)."""
    parsed = yarl.URL(url)
    headers = {"Content-Type": "application/json"}
    if parsed.user is None and parsed.password is None:
        return parsed, headers
    headers["Authorization"] = aiohttp.encode_basic_auth(parsed.user or "", parsed.password or "")
    return parsed.with_user(None), headers


def _secrets_of(url: str) -> tuple[str, ...]:
    """Every form in which a part of ``url`` that may be secret (credentials, path, query) can show up
    in an error or a receiver's answer, longest first (the host and port are not among them)."""
    parts = {url}
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        return (url,)
    parts |= {str(parsed), parsed.raw_path_qs, parsed.path_qs, parsed.raw_query_string, parsed.query_string,
              parsed.raw_user or "", parsed.user or "", parsed.raw_password or "", parsed.password or ""}
    parts |= {value for value in parsed.query.values()}
    for path in (parsed.raw_path, parsed.path):
        parts.add(path)
        parts |= set(path.split("/"))
    # a part too short to be a secret would blank out ordinary words ("/", "api", "hook")
    return tuple(sorted((p for p in parts if len(p) >= 6 or (p and p in (parsed.password, parsed.raw_password))),
                        key=len, reverse=True))


def _host_port(location: Optional[str]) -> str:
    """Where a redirect points, as host and port only (its path may hold the secret: an http:// URL
    sent on to https:// keeps it)."""
    try:
        parsed = yarl.URL(location or "")
    except (ValueError, TypeError):
        return "another address"
    if not parsed.host:
        return "another path of the same host"
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def _preview(raw: bytes, content_type: str) -> str:
    """A refusing receiver's answer in one short line: an HTML page as its title (else its text
    without tags), anything else as its first line."""
    text = raw.decode("utf-8", "replace")
    if "html" in content_type.lower() or text.lstrip()[:1] == "<":
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = title.group(1) if title else re.sub(r"<[^>]*>", " ", re.sub(r"(?is)<(script|style).*?</\1>", " ", text))
        text = html.unescape(text)
    text = " ".join(text.split())
    return text[:BODY_PREVIEW]


@contextlib.asynccontextmanager
async def alerting(app: web.Application) -> AsyncIterator[Optional[Alerts]]:
    """With ``TSWARM_ALERT_WEBHOOK`` set, judge and deliver while the block runs; yields the
    :class:`Alerts` (None without a webhook). Entered by the process that holds the singleton lock
    (service/leader.py), and left at once when it loses it: an alert in flight is sent again by the next leader."""
    config = app[keys.CONFIG]
    if not config.alert_webhook:
        yield None
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                     headers={"User-Agent": "tswarm-alerts"}) as session:
        alerts = Alerts(config, session)
        task = asyncio.create_task(alerts.run(), name="alerts")
        try:
            yield alerts
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            alerts.close()
