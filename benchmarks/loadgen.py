"""A small HTTP load generator, run as its own process so it does not share a core's time with
the servers it measures: ``python -m benchmarks.loadgen URL --requests N --concurrency C``
prints one JSON line with latency percentiles (ms) and status counts."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp


async def run(url: str, requests: int, concurrency: int, body: bytes) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                async with session.post(url, data=body) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - started)
                statuses[resp.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return {"p50": pct(0.50), "p99": pct(0.99), "rps": requests / elapsed, "statuses": dict(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.requests, args.concurrency, b"x" * 256))))


if __name__ == "__main__":
    main()
