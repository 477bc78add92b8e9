"""Load generator: N nodes sending readings as real nodes do, from its own process.

Each request opens a new connection (as a node waking from deep sleep does) unless --keepalive.
Prints JSON: accepted, other statuses, readings/s, p50/p99 latency in ms.
"""
import argparse
import asyncio
import base64
import json
import random
import time

import aiohttp

PASSWORD = "benchmark-password"


async def main(args) -> dict:
    names = [f"node{i:05d}" for i in range(args.offset, args.offset + args.nodes)]
    headers = {n: {"Authorization": " Basic " + base64.b64encode(f"{n}:{PASSWORD}".encode()).decode(),
                   "Content-Type": "application/json"} for n in names}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + args.seconds
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=not args.keepalive)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int):
            i = offset
            last = args.rounds * len(names) if args.rounds else None  # --rounds: every node sends that many times
            while (i < last) if last is not None else (time.perf_counter() < stop_at):
                name = names[i % len(names)]
                i += args.concurrency
                body = json.dumps({"name": name, "data": f"{random.randint(-400, 800) / 10} {random.randint(0, 1000) / 10}"})
                started = time.perf_counter()
                try:
                    async with session.put(f"{args.url}/api/nodes/{name}", data=body, headers=headers[name]) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientError:
                    status = 0
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

        began, cpu_began = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(k) for k in range(args.concurrency)))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0  # noqa: E731
    return {
        "accepted": statuses.get(202, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "readings_per_s": statuses.get(202, 0) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "seconds": elapsed,
        "cpu_seconds": cpu,  # this load generator's own CPU: what it takes from a machine it shares
        "latencies_ms": [round(x * 1000, 2) for x in latencies] if args.raw else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--keepalive", action="store_true")
    parser.add_argument("--offset", type=int, default=0, help="first node number (to split nodes between processes)")
    parser.add_argument("--raw", action="store_true", help="include every latency, for merging processes")
    parser.add_argument("--rounds", type=int, default=0, help="send that many readings per node, then stop (instead of --seconds)")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
