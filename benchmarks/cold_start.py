"""Cold start: N registered nodes each send their first reading to a freshly started service.

Every credential must be verified once, in a thread pool. The nodes are registered as `tswarm node add`
registers a node whose password it generates (scrypt n=2^4: 144 random bits need no work factor);
`--chosen` registers them as with `--password` (scrypt n=2^13, r=8, p=1: the memory-hard hash of a
password a person chose), to show what that would cost. Reports the time until all are accepted, the
rate, and the event loop's longest stall, seen from outside as the slowest answer of GET /healthz
polled every 10 ms during the run. Baseline: the same requests once the credentials are cached (the
steady state), so the ratio shows what the hashing costs.
"""
import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp

from common import Variant, header, machine_load, register_nodes
from tswarm import auth


async def first_readings(url: str, names: list[str], concurrency: int) -> tuple[float, float, dict]:
    statuses: dict[int, int] = {}
    stall = 0.0
    done = asyncio.Event()
    queue = list(reversed(names))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 1, force_close=True)) as session:

        async def probe():
            nonlocal stall
            while not done.is_set():
                started = time.perf_counter()
                async with session.get(url + "/healthz") as resp:
                    await resp.read()
                stall = max(stall, time.perf_counter() - started)
                await asyncio.sleep(0.01)

        async def worker():
            while queue:
                name = queue.pop()
                body = json.dumps({"name": name, "data": "21.5 40.0"})
                async with session.put(f"{url}/api/nodes/{name}", data=body,
                                       headers={"Authorization": header(name)}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        probe_task = asyncio.create_task(probe())
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        done.set()
        await probe_task
    return elapsed, stall, statuses


def main(nodes: int, concurrency: int, chosen: bool) -> None:
    scrypt_n = auth.SCRYPT_N if chosen else auth.SCRYPT_N_GENERATED  # as tswarm.nodes.register decides
    print(f"{nodes} nodes, passwords hashed as {'chosen' if chosen else 'generated'} ones (scrypt n={scrypt_n}, "
          f"r={auth.SCRYPT_R}, p={auth.SCRYPT_P}); {machine_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        names = register_nodes(data_dir, nodes, scrypt_n=scrypt_n)
        with Variant(data_dir) as service:
            cold, cold_stall, statuses = asyncio.run(first_readings(service.url, names, concurrency))
            warm, warm_stall, _ = asyncio.run(first_readings(service.url, names, concurrency))
    print(f"cold start: {nodes} nodes accepted in {cold:.1f} s ({nodes / cold:.0f}/s; statuses {statuses}), "
          f"longest event-loop stall {cold_stall * 1000:.0f} ms")
    print(f"cached:     {nodes} readings in {warm:.1f} s ({nodes / warm:.0f}/s), longest stall {warm_stall * 1000:.0f} ms")
    print(f"cold/cached time = {cold / warm:.1f}; target: all {nodes} within one wake period (300 s): "
          f"{'met' if cold <= 300 else 'NOT met'}; under 100 s: {'met' if cold < 100 else 'NOT met'}; {machine_load()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--chosen", action="store_true",
                        help="hash the nodes' passwords as chosen ones (n=2^13) instead of generated ones (n=2^4)")
    args = parser.parse_args()
    main(args.nodes, args.concurrency, args.chosen)
