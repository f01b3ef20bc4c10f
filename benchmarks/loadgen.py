"""A small HTTP load generator, run as its own process so it does not share a core's time with
the servers it measures: ``python -m benchmarks.loadgen URL --requests N --concurrency C``
prints one JSON line with latency percentiles (ms) and status counts.

Without ``--rate`` it is closed-loop: C requests always in flight, as fast as the servers go, so
latency includes whatever CPU the servers share (what a saturated machine gives). With
``--rate R`` requests start R per second, well below capacity, so latency is one request's own
path (what a client sees at a normal load)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp


async def run(
    url: str, requests: int, concurrency: int, body: bytes, timeout: float | None = None, rate: float | None = None
) -> dict[str, object]:
    """A request that takes longer than ``timeout`` seconds is abandoned and counted as "timeout"."""
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    queue = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def worker() -> None:
            for i in queue:
                if rate:
                    await asyncio.sleep(begun + i / rate - time.perf_counter())
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body) as resp:
                        await resp.read()
                    statuses[resp.status] += 1
                except TimeoutError:
                    statuses["timeout"] += 1
                latencies.append(time.perf_counter() - started)

        begun = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begun
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return {"p50": pct(0.50), "p99": pct(0.99), "rps": requests / elapsed, "statuses": dict(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--body-bytes", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a request is abandoned")
    parser.add_argument("--rate", type=float, default=None, help="requests started per second (open loop)")
    args = parser.parse_args()
    body = b"x" * args.body_bytes
    print(json.dumps(asyncio.run(run(args.url, args.requests, args.concurrency, body, args.timeout, args.rate))))


if __name__ == "__main__":
    main()
