"""``GET /metrics``: Prometheus exposition through prometheus-client, one registry per app.

Counts, and the battery and signal of nodes that send them (the only metrics that name nodes), never
temperature, humidity or secrets, so the route needs no token. Every metric is listed in
docs/api.md. Values that live elsewhere (readings accepted, the credential cache, the forwarder)
are read at scrape time by :class:`StateCollector` (what the journal knows is read by the scrape's
handler first, in a storage thread, never on the event loop); the rest are observed as they happen
(the request middleware, into a plain dict: :class:`RequestCounts`; the journal writer's ``on_commit``
callback).
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Optional

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import keys
from .errors import CLIENT_GONE, error_answer, refused_request
from .health import HEALTH_STATES, health
from .nodes import is_halted
from .settings import Config
from .storage import Storage
from .store_status import store_status

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The app's registry and the metrics observed as things happen."""

    def __init__(self, app: web.Application):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestCounts()
        self.registry.register(self.requests)
        self.commit_seconds = Histogram(
            "tswarm_journal_commit_seconds", "Time to commit and sync one group of readings.",
            buckets=COMMIT_BUCKETS, registry=self.registry,
        )
        self.commit_batch = Histogram(
            "tswarm_journal_commit_batch_size", "Readings per group commit.",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.registry.register(StateCollector(app))

    def on_commit(self, batch_size: int, seconds: float) -> None:
        """The journal writer's callback after every group commit."""
        self.commit_seconds.observe(seconds)
        self.commit_batch.observe(batch_size)


class RequestCounts:
    """``tswarm_http_requests_total{route,status}``, counted on the event loop into a plain dict (no
    label lookup and lock of prometheus-client's per answer) and exposed at scrape time as the
    ``Counter`` it replaces would expose it: same name, HELP, labels, samples and ``_created``."""

    NAME = "tswarm_http_requests"
    HELP = "HTTP requests answered, by route and status."

    def __init__(self):
        self.counts: dict[tuple[str, int], int] = {}
        self.created: dict[tuple[str, int], float] = {}  # when each (route, status) was first counted

    def inc(self, route: str, status: int) -> None:
        key = (route, status)
        try:
            self.counts[key] += 1
        except KeyError:
            self.created[key] = time.time()
            self.counts[key] = 1

    def collect(self):
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["route", "status"])
        for (route, status), count in list(self.counts.items()):
            family.add_metric([route, str(status)], count, created=self.created[(route, status)])
        yield family


@dataclass(frozen=True)
class JournalState:
    """What a scrape reads from the journal."""

    backlog: int  # readings not yet forwarded (0 with store=sqlite)
    lag_s: float  # age of the oldest of them
    nodes_by_health: dict[str, int]
    battery_volts: dict[str, float] = field(default_factory=dict)  # node -> vbat of its newest reading, if sent
    rssi_dbm: dict[str, int] = field(default_factory=dict)  # node -> rssi of its newest reading, if sent


def journal_state(journal: Storage, config: Config, now_ns: Optional[int] = None) -> JournalState:
    """Blocking: the scrape's handler runs it in a storage thread."""
    status = store_status(journal, config)
    now_ns = time.time_ns() if now_ns is None else now_ns
    halted_all = is_halted(None, config, journal.halted_all())
    nodes = journal.list_nodes()
    tally = Tally(health(now_ns, n.last_ts, n.interval_s, is_halted(n, config, halted_all)) for n in nodes)
    return JournalState(
        int(status["backlog"]), float(status["oldest_age_s"] or 0.0), dict(tally),
        battery_volts={n.name: n.last_vbat for n in nodes if n.last_vbat is not None},
        rssi_dbm={n.name: n.last_rssi for n in nodes if n.last_rssi is not None},
    )


# This scrape's JournalState, set by its handler in the request's own task before the registry collects.
_SCRAPED: ContextVar[Optional[JournalState]] = ContextVar("tswarm_scraped", default=None)


class StateCollector:
    """Reads the app's state at scrape time."""

    def __init__(self, app: web.Application):
        self.app = app

    def collect(self):
        app = self.app
        accepted = CounterMetricFamily("tswarm_readings_accepted", "Readings stored and acknowledged (202 or 423).")
        accepted.add_metric([], app[keys.STATS].accepted)
        yield accepted
        duplicates = CounterMetricFamily(
            "tswarm_readings_duplicate", "Readings sent again after a lost answer (same boot and seq): answered, stored once.",
        )
        duplicates.add_metric([], app[keys.STATS].duplicates)
        yield duplicates
        cache = app[keys.CREDENTIALS]
        hits = CounterMetricFamily("tswarm_auth_cache_hits", "Node logins verified from the credential cache.")
        hits.add_metric([], cache.hits)
        yield hits
        misses = CounterMetricFamily("tswarm_auth_cache_misses", "Node logins that needed a password hash check.")
        misses.add_metric([], cache.misses)
        yield misses
        if keys.WRITER in app:
            queued = GaugeMetricFamily("tswarm_journal_queued", "Readings waiting for the next group commit.")
            queued.add_metric([], app[keys.WRITER].queued)
            yield queued
            cpu = CounterMetricFamily(
                "tswarm_journal_writer_cpu_seconds",
                "CPU time the journal writer's thread spent in its group commits (inserts, commit, fsync's system time).",
            )
            cpu.add_metric([], getattr(app[keys.WRITER], "cpu_seconds", 0.0))
            yield cpu
        state = _SCRAPED.get()
        if state is None and keys.JOURNAL in app:  # collected outside a scrape (no handler read it first)
            state = journal_state(app[keys.JOURNAL], app[keys.CONFIG])
        g = GaugeMetricFamily("tswarm_forward_backlog", "Readings in the journal not yet forwarded (0 with store=sqlite).")
        g.add_metric([], state.backlog if state else 0)
        yield g
        g = GaugeMetricFamily("tswarm_forward_lag_seconds", "Age of the oldest reading not yet forwarded (0 with store=sqlite).")
        g.add_metric([], state.lag_s if state else 0.0)
        yield g
        if state is not None:
            nodes = GaugeMetricFamily("tswarm_nodes", "Registered nodes by health (see docs/api.md).", labels=["health"])
            for health_state in HEALTH_STATES:
                nodes.add_metric([health_state], state.nodes_by_health.get(health_state, 0))
            yield nodes
            volts = GaugeMetricFamily(
                "tswarm_node_battery_volts", "Battery voltage of each node's newest reading (nodes that send one).",
                labels=["node"],
            )
            for name, vbat in state.battery_volts.items():
                volts.add_metric([name], vbat)
            yield volts
            rssi = GaugeMetricFamily(
                "tswarm_node_rssi_dbm", "Wi-Fi signal (RSSI, dBm) of each node's newest reading (nodes that send one).",
                labels=["node"],
            )
            for name, dbm in state.rssi_dbm.items():
                rssi.add_metric([name], dbm)
            yield rssi


_GONE = web.RequestKey("tswarm.client_gone", bool)
# Set by count_requests in the request's own task (aiohttp runs each request in a new task, with a copy
# of the context): answers made below the middlewares see it unset and are counted by count_unseen.
_COUNTED: ContextVar[bool] = ContextVar("tswarm_counted", default=False)


def client_gone(request: web.Request) -> None:
    """A streaming handler tells the metrics that its client hung up mid-answer."""
    request[_GONE] = True


def _route(request: web.BaseRequest) -> str:
    try:
        match_info = request.match_info  # not resolved for a request the parser refused
    except (AttributeError, AssertionError):
        match_info = None
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_requests(request: web.Request, handler):
    """The app's one middleware (after the proxy's, when configured): answers what the handler raised
    as JSON (service/errors.py :func:`~tswarm.errors.error_answer`; before it, a request refused at
    once: another HTTP version, a refused Content-Encoding) and counts every answer by route (the
    pattern, never the node's name) and status; 499 when the client hung up mid-request or mid-answer
    (a node on bad Wi-Fi, a reader abandoning an export). One coroutine for both jobs: a request costs
    one middleware frame, not two."""
    _COUNTED.set(True)
    route = _route(request)
    status = 500
    try:
        response = refused_request(request)
        if response is None:
            try:
                response = await handler(request)
            except Exception as exc:  # not CancelledError: a BaseException, counted below
                response = error_answer(request, exc)
        status = CLIENT_GONE if request.get(_GONE) else response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_GONE
        raise
    finally:
        request.app[keys.METRICS].requests.inc(route, status)


def count_unseen(app: web.Application, request: web.BaseRequest, status: int) -> None:
    """Counts an answer that aiohttp made before the middlewares (a request its parser refused: route
    ``unmatched``; 417 for an unknown Expect), once: service/server.py calls it for every answer."""
    if not _COUNTED.get() and keys.METRICS in app:
        app[keys.METRICS].requests.inc(_route(request), status)


async def metrics_ctx(app: web.Application):
    """Hooks the journal writer's commits into the histograms (after the journal's context)."""
    writer = app[keys.WRITER]
    writer.on_commit = app[keys.METRICS].on_commit
    yield
    writer.on_commit = None


def setup_routes(app: web.Application) -> None:
    """``GET /metrics``: what the journal knows is read in a storage thread, then the registry is
    exposed as prometheus-client does it (content negotiation, ``name[]``, compression)."""
    expose = make_aiohttp_handler(app[keys.METRICS].registry)

    async def scrape(request: web.Request) -> web.Response:
        app = request.app
        state = await app[keys.STORAGE].read(journal_state, app[keys.CONFIG])
        _SCRAPED.set(state)  # this request's task only
        return await expose(request)

    app.router.add_get("/metrics", scrape)
