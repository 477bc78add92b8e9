"""The node route's own pieces, alone: what a request's login, body and answer cost in one process
with nothing else running, each beside the way it was done before (issue 16's steps).

- a login from the credential cache (service/auth.py ``authenticate``, the record from a dict as the
  registry snapshot gives it), its cache keyed by keyed BLAKE2b (now) and by HMAC-SHA256 (before);
- parsing and validating a body (service/payload.py ``parse_body``) as the seed's firmware sends it
  and with today's telemetry and key;
- the plain 202 (service/protocol.py): its body from one format (``stored_body``, now) and from
  ``json.dumps`` (``_answer``, before), each with its ``web.Response``.

Each round times every piece for ``--calls`` calls, one after the other; then median and min–max of
µs a call over the rounds, and the ratio of each "before" to its "now". What these cost inside the
running service under load is another matter (benchmarks/README.md: several times more, and the
HMAC far more, see gil.py). Not pass/fail: exit 0.

    ../.venv/bin/python hotpath.py [--rounds 5] [--calls 50000]
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tswarm import auth  # noqa: E402
from tswarm.payload import parse_body  # noqa: E402
from tswarm.protocol import _answer, _json, stored_body  # noqa: E402
from tswarm.storage import NodeAuth  # noqa: E402
from tswarm.timefmt import rfc3339  # noqa: E402

NAME = "node00001"
HEADER = " Basic " + auth.xauth(NAME, "benchmark-password")
OLD_BODY = b'{"name": "node00001", "data": "21.5 48.2"}'
TELEMETRY_BODY = (b'{"name": "node00001", "data": "21.5 48.2", "vbat": 3.71, "rssi": -61,'
                  b' "awake_ms": 2345, "boot": "a1b2c3", "seq": 17}')
TS = 1_764_633_600_123_456_789


class HmacCache(auth.CredentialCache):
    """The cache as it was keyed before 79e097a: HMAC-SHA256 through OpenSSL."""

    def key(self, header: str) -> bytes:
        return hmac.digest(self._key, header.strip().encode("utf-8", "surrogateescape"), "sha256")


def login_piece(cache: auth.CredentialCache):
    """One cached login per call, as the node route makes it (the record from a dict, no thread)."""
    node = NodeAuth(1, NAME, auth.hash_password("benchmark-password", n=16), True, False)
    records = {NAME: node}
    guard = auth.LoginGuard()

    async def lookup(name, fresh=False):
        return records.get(name)

    async def once():
        return await auth.authenticate(HEADER, "127.0.0.1", NAME, lookup=lookup, cache=cache, guard=guard, hasher=None)

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(once()) is node  # verified once (scrypt): every timed call is a cache hit
    loop.close()

    def call():  # the cached login never suspends: each call's coroutine is run to its end by hand
        coroutine = once()
        try:
            coroutine.send(None)
        except StopIteration:
            return
        coroutine.close()
        raise RuntimeError("the cached login suspended")

    return call


PIECES = {
    "login from the cache, keyed BLAKE2b (now)": lambda: login_piece(auth.CredentialCache()),
    "login from the cache, keyed HMAC-SHA256 (before)": lambda: login_piece(HmacCache()),
    "parse_body, name and data (the seed's firmware)": lambda: (lambda: parse_body(OLD_BODY, NAME)),
    "parse_body, with telemetry and key": lambda: (lambda: parse_body(TELEMETRY_BODY, NAME)),
    "plain 202 from stored_body (now)": lambda: (lambda: _json(202, stored_body(NAME, TS, 300))),
    "plain 202 from json.dumps (before)": lambda: (lambda: _answer(
        202, {"stored": True, "node": NAME, "time": rfc3339(TS), "sleep": 300})),
}
PAIRS = [  # (before, now): the ratio printed
    ("login from the cache, keyed HMAC-SHA256 (before)", "login from the cache, keyed BLAKE2b (now)"),
    ("plain 202 from json.dumps (before)", "plain 202 from stored_body (now)"),
]


def timed(call, calls: int) -> float:
    """µs a call."""
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--calls", type=int, default=50_000, help="calls of each piece a round (default 50,000)")
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    print(f"Python {sys.version.split()[0]}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    calls = {name: make() for name, make in PIECES.items()}
    results: dict[str, list[float]] = {name: [] for name in PIECES}
    for round_ in range(1, args.rounds + 1):
        for name, call in calls.items():
            results[name].append(us := timed(call, args.calls))
            print(f"round {round_}  {name:52} {us:7.2f} µs")
    print(f"\nover {args.rounds} round(s), µs a call: median (min–max)")
    for name, runs in results.items():
        print(f"{name:52} {statistics.median(runs):7.2f} ({min(runs):.2f}–{max(runs):.2f})")
    for before, now in PAIRS:
        ratios = [b / n for b, n in zip(results[before], results[now])]
        print(f"{before.split(',')[0].split(' from')[0]}: before / now {statistics.median(ratios):.2f}"
              f" ({min(ratios):.2f}–{max(ratios):.2f})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
