"""Alerts from `tswarm serve` itself (a child process, on each engine) to a real HTTP receiver on loopback
(tests/test_alerts.py's aiohttp :class:`Receiver`): the service is killed while its alerts wait for a
receiver that is down, and they reach it after the restart, once each; a node that reports again is
alerted back to ok. The service runs with its own clock and intervals, so the nodes' readings are
stored with past times; waits are guards against hanging, never timing assertions."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.conftest import open_journal, register
from tests.servers import ServiceProcess, basic, request, tswarm_env
from tests.test_alerts import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.engines]

MIN = 60 * 10**9
PW = "pw-alerts-test"


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def receiver():
    r = Receiver()  # not listening yet: the webhook is down
    yield r
    r.close()


def test_alerts_waiting_when_the_service_is_killed_are_delivered_after_it_restarts(tmp_path, data_dir, receiver):
    now = time.time_ns()
    with open_journal(data_dir) as journal:
        register(journal, "shed", PW, created=True)
        register(journal, "loft", PW, created=True)
        journal.add_readings([("shed", now - 20 * MIN, 20.0, 50.0), ("loft", now - 120 * MIN, 20.0, 50.0)])
    service = ServiceProcess(data_dir, env=tswarm_env(data_dir, TSWARM_ALERT_WEBHOOK=receiver.url))
    with open_journal(data_dir) as journal:
        service.start()
        try:
            wait_for(lambda: journal.count_pending_alerts() == 2
                     and all(p.attempts for p in journal.pending_alerts()), "two alerts tried and kept")
        finally:
            service.kill()  # SIGKILL: nothing is flushed or said goodbye to
        assert receiver.bodies == [] and journal.count_pending_alerts() == 2

        receiver.up()
        service.start()
        try:
            wait_for(lambda: len(receiver.bodies) == 2 and journal.count_pending_alerts() == 0, "both delivered")
            assert Counter((b["node"], b["event"]) for b in receiver.bodies) == {("shed", "late"): 1, ("loft", "silent"): 1}

            # shed reports again: back to ok, one POST more
            status = request("POST", service.url + "/api/nodes/shed", json.dumps({"name": "shed", "data": "21 50"}),
                             {"Authorization": basic("shed", PW), "Content-Type": "application/json"})[0]
            assert status == 202
            wait_for(lambda: len(receiver.bodies) == 3 and journal.count_pending_alerts() == 0, "the ok")
            assert (receiver.bodies[2]["node"], receiver.bodies[2]["event"], receiver.bodies[2]["previous"]) == (
                "shed", "ok", "late")
        finally:
            service.stop()
    assert len(receiver.bodies) == 3 and len({b["id"] for b in receiver.bodies}) == 3
