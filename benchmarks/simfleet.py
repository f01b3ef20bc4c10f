"""A simulated fleet of ADS clients (gRPC streams, not Envoys), for the fleet tests and benchmarks.

It lives beside the benchmarks, outside the package: nothing in the control plane imports it.
Each simulated client opens one ADS stream (State of the World or Delta) on its own channel (own
TCP connection, as every Envoy has), subscribes to everything of its Gateway (clusters and
listeners as wildcard, endpoints and routes with ``"*"``), and ACKs every response at once without
decoding it, so that a process can hold thousands of them. A *stuck* client sends its subscriptions and then never reads.

Run it as a separate process so that clients and server do not share an event loop:

    python -m benchmarks.simfleet --port 18000 --clients 1000 --gateways 10 [--delta]
        [--stuck-every 10] [--first 0] [--gateway NS/NAME]

It prints one JSON line per response received, ``{"c": client, "t": type, "v": version,
"at": time.monotonic()}`` (the monotonic clock is system-wide on Linux, so the parent can compare
it with its own), then ``{"ready": n}`` once every reading client has a response of every type.
It runs until stdin closes or it is terminated.

:func:`fleet_resources` builds a Gateway's resources for a given generation (what changes from
one generation to the next is documented there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections.abc import Callable

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from controlplane.xds.resources import CLUSTER, LISTENER, PUSH_ORDER, SHORT_NAMES, Resources

FLEET_NAMESPACE = "fleet"
OPEN_TIMEOUT = 5.0
"""Seconds for a new stream to be answered (every simulated Gateway has a snapshot)."""

log = logging.getLogger("mirrorplane.simfleet")


def gateway_name(index: int) -> str:
    return f"{FLEET_NAMESPACE}/gw-{index}"


def node_id(client: int, *, stuck: bool) -> str:
    return f"sim-{client}" + ("-stuck" if stuck else "")


# -- resources ----------------------------------------------------------------------------------


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def fleet_resources(
    generation: int, *, services: int = 20, endpoints: int = 1, cluster_generation: int | None = None
) -> Resources:
    """A Gateway's resources at ``generation``.

    ``services`` EDS clusters with their endpoints, one listener, one RouteConfiguration routing
    ``/svc-i`` to each plus ``/extra`` to cluster ``extra-{generation // 2}``. From one generation
    to the next every ClusterLoadAssignment changes (endpoint ports move); on even generations the
    extra cluster is replaced (a cluster added, one removed, routes changed: make-before-break),
    unless ``cluster_generation`` fixes it (endpoint-only changes).
    Each ClusterLoadAssignment has ``endpoints`` endpoints (~20 bytes each): large ones make
    endpoint responses larger than a stream's HTTP/2 window.
    """
    extra = f"extra-{generation // 2 if cluster_generation is None else cluster_generation}"
    names = [f"svc-{i}" for i in range(services)] + [extra]
    clusters, cla_by_name = {}, {}
    for i, name in enumerate(names):
        cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        cluster.connect_timeout.seconds = 1
        cluster.eds_cluster_config.eds_config.ads.SetInParent()
        cluster.eds_cluster_config.eds_config.resource_api_version = 2  # V3
        clusters[name] = cluster
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        locality = cla.endpoints.add()
        for e in range(endpoints):
            sa = locality.lb_endpoints.add().endpoint.address.socket_address
            sa.address, sa.port_value = "127.0.0.1", 1024 + (i * endpoints + e + generation) % 60000
        cla_by_name[name] = cla
    rc = route_pb2.RouteConfiguration(name="r")
    vh = rc.virtual_hosts.add(name="vh", domains=["*"])
    for name in names:
        r = vh.routes.add()
        r.match.prefix = "/extra" if name == extra else f"/{name}"
        r.route.cluster = name
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="l1")
    hcm.rds.route_config_name = "r"
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = 2  # V3
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
    listener = listener_pb2.Listener(name="l1")
    listener.address.socket_address.address = "0.0.0.0"
    listener.address.socket_address.port_value = 8000
    listener.filter_chains.add().filters.add(
        name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm)
    )
    return Resources(clusters=clusters, endpoints=cla_by_name, listeners={"l1": listener}, routes={"r": rc})


# -- clients ------------------------------------------------------------------------------------

Report = Callable[[int, str, str], None]


class SimClient:
    """One simulated Envoy: subscribe to everything, ACK everything."""

    def __init__(self, index: int, port: int, gateway: str, *, delta: bool, stuck: bool, host: str = "127.0.0.1"):
        self.index, self.gateway, self.delta, self.stuck = index, gateway, delta, stuck
        self.target = f"{host}:{port}"
        self.channel = self._connect()
        self.versions: dict[str, str] = {}

    def _connect(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            self.target,
            options=[
                # One TCP connection per client, like a fleet of Envoys (and a stuck client's
                # flow control then holds back only its own stream).
                ("grpc.use_local_subchannel_pool", 1),
                # Reconnect like Envoy's bootstrap does (0.25 s .. 5 s), not gRPC's 1 .. 120 s.
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 5000),
            ],
        )

    def _first_requests(self) -> list:
        out = []
        for type_url in PUSH_ORDER:
            wildcard = [] if type_url in (CLUSTER, LISTENER) else ["*"]
            if self.delta:
                req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=wildcard)
            else:
                req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=wildcard)
            out.append(req)
        node = out[0].node
        node.id, node.cluster, node.user_agent_name = node_id(self.index, stuck=self.stuck), self.gateway, "simfleet"
        return out

    def _ack(self, response):
        if self.delta:
            return discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        resource_names = [] if response.type_url in (CLUSTER, LISTENER) else ["*"]
        return discovery_pb2.DiscoveryRequest(
            type_url=response.type_url,
            version_info=response.version_info,
            resource_names=resource_names,
            response_nonce=response.nonce,
        )

    async def run(self, report: Report) -> None:
        """Serve the stream; like Envoy, open a new one when it ends or fails. (While thousands
        of streams open at once, grpc-python sometimes fails a stream's first writes, or leaves
        it unanswered: such a stream is given up after OPEN_TIMEOUT and opened again.)"""
        while True:
            try:
                await self._stream(report)
            except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
                log.debug("client %d: stream failed, retrying: %r", self.index, e)
                await self.channel.close()
                self.channel = self._connect()
            self.versions.clear()
            await asyncio.sleep(0.2 + random.random() * 0.3)

    async def _stream(self, report: Report) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        rpc = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        call = rpc(wait_for_ready=True)

        async def open_stream() -> None:
            for req in self._first_requests():
                await call.write(req)
            await call.initial_metadata()  # the server has started answering

        try:
            await asyncio.wait_for(open_stream(), OPEN_TIMEOUT)
        except TimeoutError:
            call.cancel()
            raise
        if self.stuck:
            await asyncio.Event().wait()  # hold the stream open, never read
        async for response in call:
            version = response.system_version_info if self.delta else response.version_info
            self.versions[response.type_url] = version
            report(self.index, response.type_url, version)
            await call.write(self._ack(response))

    async def close(self) -> None:
        await self.channel.close()


async def run_fleet(
    *,
    port: int,
    clients: int,
    gateways: int,
    delta: bool,
    stuck_every: int = 0,
    first: int = 0,
    gateway: str | None = None,
    out=sys.stdout,
) -> None:
    """Run clients ``first`` .. ``first + clients - 1`` until stdin closes (or cancellation).

    Client ``i`` serves ``gateway_name(i % gateways)``, or ``gateway`` if given."""
    fleet = [
        SimClient(
            i,
            port,
            gateway or gateway_name(i % gateways),
            delta=delta,
            stuck=bool(stuck_every) and i % stuck_every == 0,
        )
        for i in range(first, first + clients)
    ]
    by_index = {c.index: c for c in fleet}
    reading = {c.index for c in fleet if not c.stuck}
    synced: set[int] = set()

    def report(index: int, type_url: str, version: str) -> None:
        out.write(json.dumps({"c": index, "t": SHORT_NAMES[type_url], "v": version, "at": time.monotonic()}) + "\n")
        if index not in synced and len(by_index[index].versions) == len(PUSH_ORDER):
            synced.add(index)
            if synced == reading:
                out.write(json.dumps({"ready": len(synced)}) + "\n")
                out.flush()

    tasks = [asyncio.ensure_future(c.run(report)) for c in fleet]
    flusher = asyncio.ensure_future(_flush_every(out, 0.02))
    try:
        await _stdin_closed()
    finally:
        for t in tasks:
            t.cancel()
        flusher.cancel()
        await asyncio.gather(*tasks, flusher, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in fleet), return_exceptions=True)
        out.flush()


async def _flush_every(out, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        out.flush()


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--delta", action="store_true", help="Delta ADS instead of State of the World")
    parser.add_argument("--stuck-every", type=int, default=0, help="every Nth client never reads")
    parser.add_argument("--first", type=int, default=0, help="index of the first client")
    parser.add_argument("--gateway", help="NAMESPACE/NAME served to every client (instead of --gateways)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(
            run_fleet(
                port=args.port,
                clients=args.clients,
                gateways=args.gateways,
                delta=args.delta,
                stuck_every=args.stuck_every,
                first=args.first,
                gateway=args.gateway,
            )
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
