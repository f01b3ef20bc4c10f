"""What a stuck mirror costs the client: a real Envoy under a bounded load of large POSTs, client
p50 and p99 with a mirror backend that accepts connections and never reads (`mirrorplane echo
--stall`), as ratios to the same load with no mirror, measured in one run against the same Envoy,
primary backend and load generator.

    python -m benchmarks.mirror_stall [--requests 60] [--concurrency 4] [--timeout 30]

Two body sizes: one over the mirror body bound (not mirrored, so the stuck mirror must cost
nothing) and one within it (mirrored into the stuck mirror's buffers). A request that takes
longer than --timeout is abandoned and shown under "timeout": before the bound, every large
request to a stuck mirror ended there. Each configuration gets an uncounted warm-up run.
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.mirror_cost import _load, _route, _spawn, _until_policy, latency_line, local_gateway
from controlplane.ports import free_port
from controlplane.xds.translator import DEFAULT_MIRROR_BODY_LIMIT

MiB = 1024 * 1024
BODIES = {"8 MiB (over the bound)": 8 * MiB, "512 KiB (within the bound)": MiB // 2}


async def run(requests: int, concurrency: int, timeout: float) -> None:
    ports = {n: free_port() for n in ("gw", "pipy", "mirror", "xds")}
    backends = [
        await _spawn("-m", "controlplane.echo", "--port", str(ports["pipy"]), "--name", "pipy"),
        await _spawn("-m", "controlplane.echo", "--port", str(ports["mirror"]), "--name", "pipy-mirror", "--stall"),
    ]
    url = f"http://127.0.0.1:{ports['gw']}/"
    results: dict[tuple[str, str], dict[str, float]] = {}
    try:
        async with local_gateway(ports) as (folder, envoy):
            for config, mirror in (("no mirror", False), ("stuck mirror", True)):
                (folder / "route.yaml").write_text(_route(mirror))
                await _until_policy(envoy, mirror)
                for body, size in BODIES.items():
                    options = ("--body-bytes", str(size), "--timeout", str(timeout))
                    await _load(url, max(1, requests // 5), concurrency, *options)  # warm-up
                    results[body, config] = await _load(url, requests, concurrency, *options)
    finally:
        for proc in backends:
            proc.terminate()
            await proc.wait()
    print(f"mirror body bound {DEFAULT_MIRROR_BODY_LIMIT} bytes; {requests} POSTs per run, {concurrency} at a time")
    for body in BODIES:
        print(body)
        base = results[body, "no mirror"]
        for config in ("no mirror", "stuck mirror"):
            r = results[body, config]
            print("  " + latency_line(config, r, base, 13))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before a request is abandoned (default 30)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency, args.timeout))


if __name__ == "__main__":
    main()
