"""Until Envoy serves a path: how the benchmarks see that a change was applied.

A module of its own so that a benchmark can use it without importing another benchmark's
(push_latency's) imports: change_latency measures the RSS of its process as the control plane's.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp


async def until_served(session: aiohttp.ClientSession, url: str, host: str, started: float) -> float:
    """Seconds from ``started`` until Envoy answers 200 for ``url``. Polls every 2 ms: a busy
    poll would take CPU from the control plane it is timing (same process, two cores)."""
    while True:
        try:
            async with session.get(url, headers={"Host": host}) as resp:
                await resp.read()
                if resp.status == 200:
                    return time.perf_counter() - started
        except aiohttp.ClientConnectionError:
            pass  # the listener is not bound yet
        await asyncio.sleep(0.002)
