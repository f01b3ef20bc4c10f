"""Does VHDS make a one-route change cheaper for Envoy than a whole RouteConfiguration?

    python -m benchmarks.vhds_floor [--routes 10000] [--rounds 5] [--phases 4] [--envoy-log]

A bare Delta ADS server (this file; not mirrorplane's) serves the change_latency workload,
translated by mirrorplane, to a real Envoy in two shapes, a fresh Envoy per phase, the shapes
alternating phase by phase:

* inline: one RouteConfiguration with every virtual host; a change sends it whole (what
  mirrorplane does, and what change_latency's floor measures);
* vhds: the RouteConfiguration names a VHDS config source (Delta ADS) and holds no virtual
  host; the virtual hosts are VirtualHost resources, and a change sends only the changed one.

Each is timed as the floor is: from the response written on the stream until an HTTP request
through Envoy for the changed path stops answering 404. Envoy 1.40 merges a VHDS update into its
copy of the RouteConfiguration and builds the whole route table again (RouteConfigUpdateReceiverImpl
::onVhdsUpdate), so what VHDS can save is only the wire, decoding and validation of the
unchanged virtual hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from controlplane.echo import build_app
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources
from controlplane.xds.translator import XdsOptions, build_resources

from .change_latency import GATEWAY, RULES, http_routes
from .served import until_served
from .workload import objects

VHOST = "type.googleapis.com/envoy.config.route.v3.VirtualHost"


def _resources(n: int, echo_port: int, gw_port: int) -> Resources:
    docs = [*objects(0, endpoint_port=echo_port), *http_routes(n)]
    store = Store.from_objects([from_dict(schema.validate(d)) for d in docs])
    return build_resources(
        translate(store).gateways[GATEWAY], XdsOptions(bind_address="127.0.0.1", port_map={8000: gw_port})
    )


def _vhds_config(config: route_pb2.RouteConfiguration) -> route_pb2.RouteConfiguration:
    out = route_pb2.RouteConfiguration()
    out.CopyFrom(config)
    del out.virtual_hosts[:]
    source = out.vhds.config_source
    source.resource_api_version = 2  # V3
    source.ads.SetInParent()  # Envoy's ADS stream is Delta (bootstrap), which VHDS requires
    return out


def _vhds_name(route_config: str, vh: rc.VirtualHost) -> str:
    """Envoy delivers a VirtualHost to the route configuration named by everything before the
    last "/" of the resource name (namespace matching), so the rest must hold no "/"."""
    return f"{route_config}/{vh.name.replace('/', '_')}"


class Server(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Answers each type's first request with everything; later responses are put in ``queue``."""

    def __init__(self, resources: Resources, vhds: bool) -> None:
        self.resources = resources
        self.vhds = vhds
        self.queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()
        self.nonce = 0
        self.seen: list[str] = []

    def response(self, type_url: str, items: list[tuple[str, bytes]]) -> discovery_pb2.DeltaDiscoveryResponse:
        self.nonce += 1
        out = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, nonce=str(self.nonce), system_version_info=str(self.nonce)
        )
        for name, data in items:
            out.resources.add(name=name, version=str(self.nonce), resource=any_pb2.Any(type_url=type_url, value=data))
        return out

    def initial(self, type_url: str) -> list[tuple[str, bytes]]:
        r = self.resources
        if type_url == CLUSTER:
            return [(n, m.SerializeToString()) for n, m in r.clusters.items()]
        if type_url == ENDPOINT:
            return [(n, m.SerializeToString()) for n, m in r.endpoints.items()]
        if type_url == LISTENER:
            return [(n, m.SerializeToString()) for n, m in r.listeners.items()]
        if type_url == ROUTE:
            return [(n, (_vhds_config(m) if self.vhds else m).SerializeToString()) for n, m in r.routes.items()]
        if type_url == VHOST:
            return [(_vhds_name(n, vh), vh.SerializeToString()) for n, m in r.routes.items() for vh in m.virtual_hosts]
        return []

    async def DeltaAggregatedResources(  # noqa: N802 - the gRPC method's name
        self, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        answered: set[str] = set()

        async def read() -> None:
            async for req in requests:
                nack = req.error_detail.message[:300] if req.HasField("error_detail") else ""
                self.seen.append(f"{req.type_url.rsplit('.', 1)[1]} {list(req.resource_names_subscribe)[:3]} {nack}")
                if req.type_url not in answered:
                    answered.add(req.type_url)
                    await self.queue.put(self.response(req.type_url, self.initial(req.type_url)))

        reader = asyncio.ensure_future(read())
        try:
            while True:
                yield await self.queue.get()
        finally:
            reader.cancel()


async def _measure(shape: str, n: int, rounds: int, resources: Resources, url: str, envoy_log: bool) -> list[float]:
    xds_port = free_port()
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    ads = Server(resources, vhds=shape == "vhds")
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    server.add_insecure_port(f"127.0.0.1:{xds_port}")
    await server.start()
    envoy = LocalEnvoy(
        node_id=f"vhds-{shape}",
        gateway=GATEWAY,
        xds_port=xds_port,
        admin_port=0,
        log_sink=lambda line: print(line[:400]) if envoy_log else None,
        log_level="debug" if envoy_log else "warning",
    )
    await envoy.start()
    times = []
    (name, config), *_ = resources.routes.items()
    try:
        async with aiohttp.ClientSession() as session:
            try:
                await asyncio.wait_for(until_served(session, f"{url}/r0", "host-0.example.com", 0), 30)
            except TimeoutError:
                print(shape, "never served; requests seen:", ads.seen[-12:], envoy.recent_logs(10))
                raise
            for k in range(rounds):
                i = (k * 7919 + n // 2) % (n - 1) + 1
                path = f"/r{i}-{shape}{k}"
                changed = route_pb2.RouteConfiguration()
                changed.CopyFrom(config)
                [vh] = [v for v in changed.virtual_hosts if v.domains[0] == f"host-{i // RULES}.example.com"]
                for r in vh.routes:
                    if r.match.path_separated_prefix == f"/r{i}":
                        r.match.path_separated_prefix = path
                if shape == "vhds":
                    response = ads.response(VHOST, [(_vhds_name(name, vh), vh.SerializeToString())])
                else:
                    response = ads.response(ROUTE, [(name, changed.SerializeToString())])
                await asyncio.sleep(0.3)
                started = time.perf_counter()
                await ads.queue.put(response)
                times.append(
                    await asyncio.wait_for(
                        until_served(session, url + path, f"host-{i // RULES}.example.com", started), 30
                    )
                )
                config = changed
    finally:
        await envoy.stop()
        await server.stop(None)
    return times


async def run(n: int, rounds: int, phases: int, envoy_log: bool) -> None:
    echo_port, gw_port = free_port(), free_port()
    runner = web.AppRunner(build_app(name="backend", out=open("/dev/null", "w")), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", echo_port).start()
    resources = _resources(n, echo_port, gw_port)
    url = f"http://127.0.0.1:{gw_port}"
    results: dict[str, list[float]] = {"inline": [], "vhds": []}
    for k in range(phases):
        for shape in ("inline", "vhds") if k % 2 == 0 else ("vhds", "inline"):
            results[shape] += await _measure(shape, n, rounds, resources, url, envoy_log)
    await runner.cleanup()
    for shape, times in results.items():
        print(
            f"N={n} {shape:>6}: one route changed → served, median {statistics.median(times) * 1e3:6.1f} ms"
            f" (min {min(times) * 1e3:6.1f}, max {max(times) * 1e3:6.1f}, {len(times)} pushes)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5, help="changes per Envoy")
    parser.add_argument("--phases", type=int, default=4, help="Envoys per shape, the shapes alternating")
    parser.add_argument("--envoy-log", action="store_true", help="print Envoy's debug log (to see VHDS at work)")
    args = parser.parse_args()
    asyncio.run(run(args.routes, args.rounds, args.phases, args.envoy_log))


if __name__ == "__main__":
    main()
