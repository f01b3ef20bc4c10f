"""Time from saving a route file to a real Envoy serving the change, median of 20, beside the
bare push → served time of a prebuilt snapshot in the same run (the floor: ADS + Envoy alone).

    python -m benchmarks.push_latency [--routes N] [--rounds 20]

Both are measured the same way: from the moment of the change until an HTTP request through
Envoy for the new path stops answering 404.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from controlplane.echo import build_app
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.translator import XdsOptions, build_resources

from .served import until_served
from .workload import NAMESPACE, objects, route

GATEWAY = f"{NAMESPACE}/gw"


async def run(n_routes: int, rounds: int) -> None:
    echo_port, gw_port, xds_port = free_port(), free_port(), free_port()
    runner = web.AppRunner(build_app(name="backend", out=open("/dev/null", "w")), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", echo_port).start()
    base = objects(n_routes, endpoint_port=echo_port)
    xds_options = XdsOptions(bind_address="127.0.0.1", port_map={8000: gw_port})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "base.yaml").write_text(yaml.safe_dump_all(base))
        plane = ControlPlane(
            FileProvider(folder), xds_host="127.0.0.1", xds_port=xds_port, http_port=None, xds_options=xds_options
        )
        await plane.start()
        envoy = LocalEnvoy(node_id="bench", gateway=GATEWAY, xds_port=xds_port, admin_port=0, log_sink=lambda _: None)
        await envoy.start()
        url = f"http://127.0.0.1:{gw_port}"
        file_times, bare_times = [], []
        async with aiohttp.ClientSession() as session:
            await until_served(session, f"{url}/r0", "host-0.example.com", time.perf_counter())
            valid_base = [from_dict(schema.validate(o)) for o in base]
            for i in range(rounds):
                # Through the file provider: the whole path a user's save takes.
                probe = route(n_routes + 1, tag=f"-file-{i}")
                started = time.perf_counter()
                tmp_file = folder / ".probe.tmp"
                tmp_file.write_text(yaml.safe_dump(probe))
                tmp_file.replace(folder / "probe.yaml")
                file_times.append(
                    await until_served(
                        session, f"{url}/r{n_routes + 1}-file-{i}", f"host-{n_routes + 1}.example.com", started
                    )
                )
                # The floor: a snapshot built beforehand, handed straight to the cache.
                extra = from_dict(schema.validate(route(n_routes + 2, tag=f"-bare-{i}")))
                prebuilt = build_resources(
                    translate(Store.from_objects([*valid_base, extra])).gateways[GATEWAY], xds_options
                )
                started = time.perf_counter()
                plane.cache.set(GATEWAY, prebuilt)
                bare_times.append(
                    await until_served(
                        session, f"{url}/r{n_routes + 2}-bare-{i}", f"host-{n_routes + 2}.example.com", started
                    )
                )
        await envoy.stop()
        await plane.stop()
    await runner.cleanup()
    fm, bm = statistics.median(file_times), statistics.median(bare_times)
    print(
        f"routes={n_routes} rounds={rounds} | file save → Envoy serving: median {fm * 1e3:.1f} ms"
        f" (max {max(file_times) * 1e3:.1f}) | bare push → serving: median {bm * 1e3:.1f} ms"
        f" (max {max(bare_times) * 1e3:.1f}) | overhead ratio {fm / bm:.2f}x the floor"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for n in args.routes:
        asyncio.run(run(n, args.rounds))


if __name__ == "__main__":
    main()
