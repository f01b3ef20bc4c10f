"""controlplane.xds.server: SotW ADS over real gRPC streams, and against a real Envoy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterable

import aiohttp
import grpc
import pytest
from aiohttp import web
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
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controlplane.xds.cache import Snapshot, SnapshotCache
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources
from controlplane.xds.server import ADS_SERVICE_NAME, build_server
from controlplane.xds.sotw import build_response
from controlplane.xds.tracking import Event, EventKind, NodeRegistry
from support import free_port, wait_until

GW = "ns/gw"
MESSAGE_CLASSES = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


# -- hand-made resources ------------------------------------------------------------------------


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.connect_timeout.seconds = 1
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.eds_cluster_config.eds_config.resource_api_version = 2  # V3
    return cluster


def load_assignment(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    sa = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = "127.0.0.1", port
    return cla


def http_listener(name: str, port: int, route_name: str = "r") -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route_name
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = 2  # V3
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
    listener = listener_pb2.Listener(name=name)
    sa = listener.address.socket_address
    sa.address, sa.port_value = "127.0.0.1", port
    listener.filter_chains.add().filters.add(
        name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm)
    )
    return listener


def route_config(name: str, routes: dict[str, str], *, domains: Iterable[str] = ("*",)) -> route_pb2.RouteConfiguration:
    """``routes``: path prefix → cluster."""
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="vh", domains=list(domains))
    for prefix, cluster in routes.items():
        r = vh.routes.add()
        r.match.prefix = prefix
        r.route.cluster = cluster
    return rc


def make_resources(
    *,
    clusters: dict[str, int] | None = None,
    routes: dict[str, str] | None = None,
    listener_port: int = 10000,
    route: route_pb2.RouteConfiguration | None = None,
) -> Resources:
    """``clusters``: name → endpoint port (each an EDS cluster with its endpoints)."""
    clusters = {"c1": 8080} if clusters is None else clusters
    routes = {"/": "c1"} if routes is None else routes
    return Resources(
        clusters={n: eds_cluster(n) for n in clusters},
        endpoints={n: load_assignment(n, p) for n, p in clusters.items()},
        listeners={"l1": http_listener("l1", listener_port)},
        routes={"r": route if route is not None else route_config("r", routes)},
    )


def names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    cls = MESSAGE_CLASSES[response.type_url]
    out = []
    for packed in response.resources:
        assert packed.type_url == response.type_url
        message = cls.FromString(packed.value)
        out.append(message.cluster_name if response.type_url == ENDPOINT else message.name)
    return sorted(out)


# -- a scripted Envoy ---------------------------------------------------------------------------


class FakeEnvoy:
    """An ADS client stream driven by the test, speaking like Envoy (SotW)."""

    def __init__(self, port: int, node_id: str = "envoy-1", gateway: str = GW):
        self.node_id = node_id
        self.gateway = gateway
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources()
        self._first = True
        self.subscriptions: dict[str, list[str]] = {}
        self.nonces: dict[str, str] = {}
        self.versions: dict[str, str] = {}

    async def request(
        self,
        type_url: str,
        resource_names: Iterable[str] | None = None,
        *,
        version: str | None = None,
        nonce: str | None = None,
        error: str | None = None,
    ) -> None:
        if resource_names is not None:
            self.subscriptions[type_url] = list(resource_names)
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=self.subscriptions.get(type_url, []),
            version_info=self.versions.get(type_url, "") if version is None else version,
            response_nonce=self.nonces.get(type_url, "") if nonce is None else nonce,
        )
        if self._first:
            req.node.id = self.node_id
            req.node.cluster = self.gateway
            req.node.user_agent_name = "fake-envoy"
            self._first = False
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), timeout)
        assert response is not grpc.aio.EOF, "stream ended"
        self.nonces[response.type_url] = response.nonce
        return response

    async def ack(self, response: discovery_pb2.DiscoveryResponse, resource_names=None) -> None:
        self.versions[response.type_url] = response.version_info
        await self.request(response.type_url, resource_names, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DiscoveryResponse, message: str) -> None:
        # Envoy keeps (and reports) the last version it accepted.
        await self.request(response.type_url, nonce=response.nonce, error=message)

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


class Plane:
    def __init__(self, cache: SnapshotCache, registry: NodeRegistry, port: int):
        self.cache, self.registry, self.port = cache, registry, port
        self.envoys: list[FakeEnvoy] = []

    def envoy(self, node_id: str = "envoy-1", gateway: str = GW) -> FakeEnvoy:
        env = FakeEnvoy(self.port, node_id, gateway)
        self.envoys.append(env)
        return env

    def state(self, node_id: str = "envoy-1", type_url: str | None = None):
        [stream] = self.registry.by_node(node_id)
        return stream if type_url is None else stream.types[type_url]


@pytest.fixture(name="plane")
async def plane_fixture() -> AsyncIterator[Plane]:
    cache, registry = SnapshotCache(), NodeRegistry()
    port = free_port()
    server = build_server(cache, registry, address=f"127.0.0.1:{port}")
    await server.start()
    p = Plane(cache, registry, port)
    try:
        yield p
    finally:
        for env in p.envoys:
            await env.close()
        await server.stop(None)


async def subscribe_all(env: FakeEnvoy, snap: Snapshot) -> dict[str, discovery_pb2.DiscoveryResponse]:
    """Envoy's startup, all ACKed: CDS, EDS for its clusters (asked before it ACKs CDS), then LDS
    and RDS for its routes (asked before it ACKs LDS)."""
    await env.request(CLUSTER, [])
    cds = await env.recv()
    await env.request(ENDPOINT, names(cds))
    eds = await env.recv()
    await env.ack(cds)
    await env.ack(eds)
    await env.request(LISTENER, [])
    lds = await env.recv()
    await env.request(ROUTE, ["r"])
    rds = await env.recv()
    await env.ack(lds)
    await env.ack(rds)
    out = {CLUSTER: cds, ENDPOINT: eds, LISTENER: lds, ROUTE: rds}
    for t, resp in out.items():
        assert resp.type_url == t
        assert resp.version_info == snap.version_of(t)
    return out


# -- protocol tests -----------------------------------------------------------------------------


async def test_initial_subscription_and_named_types(plane):
    snap = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 8081}))
    env = plane.envoy()
    await env.request(CLUSTER, [])
    await env.request(LISTENER, ["*"])
    cds = await env.recv()
    assert cds.type_url == CLUSTER and names(cds) == ["c1", "c2"]
    assert cds.version_info == snap.version_of(CLUSTER)
    assert cds.control_plane.identifier == "mirrorplane"

    # EDS: exactly the requested names that exist.
    await env.request(ENDPOINT, ["c1", "missing"])
    eds = await env.recv()
    assert eds.type_url == ENDPOINT and names(eds) == ["c1"]
    # Listeners wait until clusters and endpoints are applied.
    assert plane.state(type_url=LISTENER).responses == 0
    await env.ack(cds)
    await env.ack(eds)
    lds = await env.recv()
    assert lds.type_url == LISTENER and names(lds) == ["l1"]
    assert lds.version_info == snap.version_of(LISTENER)
    assert len({cds.nonce, eds.nonce, lds.nonce}) == 3

    await env.request(ROUTE, ["r"])
    rds = await env.recv()
    assert rds.type_url == ROUTE and names(rds) == ["r"]
    # Resources are the snapshot's stored bytes.
    assert rds.resources[0].value == snap[ROUTE].entries["r"].data

    # ACKs are recorded, with a push-to-ACK latency.
    await wait_until(lambda: plane.state(type_url=ENDPOINT).acked_version == eds.version_info)
    ts = plane.state(type_url=CLUSTER)
    assert ts.acked_version == cds.version_info
    assert ts.acks == 1 and ts.responses == 1 and not ts.in_flight
    assert ts.last_ack_latency is not None and ts.last_ack_latency >= 0
    assert plane.state(type_url=ENDPOINT).resource_names == {"c1", "missing"}
    assert plane.state(type_url=ROUTE).in_flight

    # Growing a named subscription sends the type again, with the new name.
    await env.request(ENDPOINT, ["c1", "c2"])
    eds2 = await env.recv()
    assert eds2.type_url == ENDPOINT and names(eds2) == ["c1", "c2"]


async def test_nack_is_recorded_and_not_resent(plane, caplog):
    caplog.set_level(logging.INFO, logger="mirrorplane.xds")
    plane.cache.set(GW, make_resources())
    env = plane.envoy()
    first = await subscribe_all(env, plane.cache.get(GW))

    events: list[Event] = []
    plane.registry.add_observer(events.append)
    bad = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c9": 8089}, routes={"/": "c9"}))
    cds = await env.recv()
    assert cds.type_url == CLUSTER and names(cds) == ["c1", "c9"]
    await env.nack(cds, "cluster c9: invalid\nsecond line")
    await wait_until(lambda: plane.state(type_url=CLUSTER).last_nack is not None)
    ts = plane.state(type_url=CLUSTER)
    assert ts.last_nack.version == bad.version_of(CLUSTER)
    assert ts.last_nack.kept_version == first[CLUSTER].version_info
    assert ts.last_nack.message == "cluster c9: invalid\nsecond line"
    assert ts.last_nack.nonce == cds.nonce
    assert ts.nacked and ts.nacks == 1 and ts.acked_version == first[CLUSTER].version_info
    assert [e.kind for e in events if e.kind is EventKind.NACK] == [EventKind.NACK]

    [line] = [r for r in caplog.records if r.getMessage().startswith("xds.nack ")]
    assert line.levelno == logging.WARNING
    text = line.getMessage()
    assert "\n" not in text
    for part in ("node=envoy-1", f"gateway={GW}", "type=clusters", f"version={cds.version_info}", "c9: invalid"):
        assert part in text

    # Envoy has decided, so the routes go on; the NACKed CDS is not sent again: the next
    # responses are the routes and then the answer to a probe.
    rds = await env.recv()
    assert rds.type_url == ROUTE and rds.version_info == bad.version_of(ROUTE)
    await env.request(ENDPOINT, ["c1", "c9"])
    probe = await env.recv()
    assert probe.type_url == ENDPOINT and names(probe) == ["c1", "c9"]
    assert plane.state(type_url=CLUSTER).responses == 2

    # A later, different snapshot is sent normally (c9 was rejected, so it is not held).
    good = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c8": 8088}))
    cds3 = await env.recv()
    assert cds3.type_url == CLUSTER and names(cds3) == ["c1", "c8"]
    assert cds3.version_info == good.version_of(CLUSTER)


async def test_new_snapshot_pushes_only_changed_types_in_order(plane):
    plane.cache.set(GW, make_resources())
    env = plane.envoy()
    before = await subscribe_all(env, plane.cache.get(GW))

    # Endpoints and routes change; clusters and listeners do not.
    snap = plane.cache.set(GW, make_resources(clusters={"c1": 9999}, routes={"/x": "c1"}))
    eds = await env.recv()
    assert eds.type_url == ENDPOINT
    assert eds.version_info == snap.version_of(ENDPOINT) != before[ENDPOINT].version_info
    await env.ack(eds)  # routes wait for the endpoints to be applied
    rds = await env.recv()
    assert rds.type_url == ROUTE and rds.version_info == snap.version_of(ROUTE)
    await env.ack(rds)
    await wait_until(lambda: plane.state(type_url=ROUTE).acks == 2)
    for t in (CLUSTER, LISTENER):
        assert plane.state(type_url=t).responses == 1

    # Everything changes: all four, in PUSH_ORDER.
    plane.cache.set(
        GW,
        Resources(
            clusters={"c1": eds_cluster("c1"), "c2": eds_cluster("c2")},
            endpoints={"c1": load_assignment("c1", 1), "c2": load_assignment("c2", 2)},
            listeners={"l1": http_listener("l1", 10001)},
            routes={"r": route_config("r", {"/": "c2"})},
        ),
    )
    cds = await env.recv()
    eds = await env.recv()
    assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
    await env.ack(cds)
    assert plane.state(type_url=LISTENER).responses == 1
    await env.ack(eds)
    lds = await env.recv()
    rds = await env.recv()
    assert (lds.type_url, rds.type_url) == (LISTENER, ROUTE)


async def test_routes_wait_for_new_clusters_to_be_applied(plane):
    """A route to a new cluster goes out only after CDS and EDS (its endpoints) are ACKed."""
    plane.cache.set(GW, make_resources())
    env = plane.envoy()
    await subscribe_all(env, plane.cache.get(GW))
    plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 2}, routes={"/": "c1", "/2": "c2"}))
    cds = await env.recv()
    assert cds.type_url == CLUSTER and names(cds) == ["c1", "c2"]
    await env.request(ENDPOINT, ["c1", "c2"])
    eds = await env.recv()
    assert eds.type_url == ENDPOINT and names(eds) == ["c1", "c2"]
    await env.ack(eds)
    await wait_until(lambda: plane.state(type_url=ENDPOINT).acks == 2)
    assert plane.state(type_url=ROUTE).responses == 1  # CDS not ACKed yet (Envoy: warming)
    await env.ack(cds)
    rds = await env.recv()
    assert rds.type_url == ROUTE


async def test_unchanged_snapshot_sends_nothing(plane):
    plane.cache.set(GW, make_resources())
    env = plane.envoy()
    await subscribe_all(env, plane.cache.get(GW))
    plane.cache.set(GW, make_resources())  # same content: same object, streams not woken
    plane.cache.set(GW, make_resources(clusters={"c1": 1}))
    eds = await env.recv()
    assert eds.type_url == ENDPOINT  # the first thing sent is the real change


def with_connect_timeout(resources: Resources, seconds: int) -> Resources:
    """``resources`` with every cluster's connect timeout changed: a cluster-only change."""
    clusters = {}
    for name, cluster in resources.clusters.items():
        changed = cluster_pb2.Cluster()
        changed.CopyFrom(cluster)
        changed.connect_timeout.seconds = seconds
        clusters[name] = changed
    return dataclasses.replace(resources, clusters=clusters)


async def test_cluster_update_resends_unchanged_endpoints_on_request(plane):
    """Envoy re-creates an updated cluster, which warms until it gets its endpoints again: its
    repeated EDS request after the CDS update is answered though the endpoints did not change."""
    first = plane.cache.set(GW, make_resources())
    env = plane.envoy()
    start = await subscribe_all(env, first)
    second = plane.cache.set(GW, with_connect_timeout(make_resources(), 5))
    assert second.changed_types(first) == [CLUSTER]
    cds = await env.recv()
    assert cds.type_url == CLUSTER
    await env.request(ENDPOINT)  # the warming cluster asks again, same names, version and nonce
    eds = await env.recv()
    assert (eds.type_url, names(eds)) == (ENDPOINT, ["c1"])
    assert eds.version_info == start[ENDPOINT].version_info and eds.nonce != start[ENDPOINT].nonce
    assert eds.resources[0].value == start[ENDPOINT].resources[0].value
    await env.ack(cds)
    await env.ack(eds)
    await wait_until(lambda: plane.state(type_url=ENDPOINT).acks == 2)

    # Once answered, a repeat is not a re-request after a cluster update: nothing is sent (the
    # next response is the next real change).
    await env.request(ENDPOINT)
    await env.request(CLUSTER)
    third = plane.cache.set(GW, with_connect_timeout(make_resources(listener_port=10001), 5))
    lds = await env.recv()
    assert (lds.type_url, lds.version_info) == (LISTENER, third.version_of(LISTENER))
    assert plane.state(type_url=ENDPOINT).responses == 2


async def test_eds_repeat_without_cluster_update_gets_nothing(plane):
    """A repeated EDS request with no CDS response since the last EDS one (e.g. Envoy dropping a
    cluster) needs no answer; after an EDS NACK the rejected endpoints are not resent either."""
    both = {"c1": 8080, "c2": 8081}
    first = plane.cache.set(GW, make_resources(clusters=both, routes={"/": "c1"}))
    env = plane.envoy()
    await subscribe_all(env, first)
    await env.request(ENDPOINT, ["c1"])
    await wait_until(lambda: plane.state(type_url=ENDPOINT).resource_names == {"c1"})

    bad = plane.cache.set(GW, make_resources(clusters={**both, "c1": 1}, routes={"/": "c1"}))
    assert bad.changed_types(first) == [ENDPOINT]
    eds = await env.recv()  # not a resend of the first endpoints: the change
    assert (eds.type_url, eds.version_info, names(eds)) == (ENDPOINT, bad.version_of(ENDPOINT), ["c1"])
    await env.nack(eds, "bad endpoints")
    plane.cache.set(GW, with_connect_timeout(make_resources(clusters={**both, "c1": 1}, routes={"/": "c1"}), 5))
    cds = await env.recv()
    assert cds.type_url == CLUSTER
    await env.request(ENDPOINT)
    await env.ack(cds)
    await wait_until(lambda: plane.state(type_url=CLUSTER).acks == 2)
    fixed = plane.cache.set(GW, with_connect_timeout(make_resources(clusters={**both, "c1": 2}, routes={"/": "c1"}), 5))
    eds = await env.recv()  # not a resend of the rejected endpoints: the next change
    assert (eds.type_url, eds.version_info) == (ENDPOINT, fixed.version_of(ENDPOINT))
    assert plane.state(type_url=ENDPOINT).responses == 3


async def test_cluster_removal_is_make_before_break(plane):
    """Removed clusters stay in CDS until the new routes are ACKed; then the final CDS."""
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2}, routes={"/": "c1", "/2": "c2"}))
    env = plane.envoy()
    await subscribe_all(env, s1)

    s2 = plane.cache.set(GW, make_resources(clusters={"c2": 2, "c3": 3}, routes={"/": "c3", "/2": "c2"}))
    union = await env.recv()
    assert union.type_url == CLUSTER and names(union) == ["c1", "c2", "c3"]
    assert union.version_info not in (s1.version_of(CLUSTER), s2.version_of(CLUSTER))
    assert plane.state().held_clusters == {"c1"}
    # Like Envoy: the EDS request for the new cluster comes before the CDS ACK.
    await env.request(ENDPOINT, ["c1", "c2", "c3"])
    eds = await env.recv()
    assert eds.type_url == ENDPOINT and names(eds) == ["c1", "c2", "c3"]  # c1's endpoints held
    await env.ack(union)
    await env.ack(eds)
    rds = await env.recv()
    assert rds.type_url == ROUTE and rds.version_info == s2.version_of(ROUTE)
    # Routes not ACKed yet: still the union.
    assert plane.state(type_url=CLUSTER).sent_version == union.version_info
    assert plane.state(type_url=CLUSTER).responses == 2

    await env.ack(rds)
    final = await env.recv()
    assert final.type_url == CLUSTER and names(final) == ["c2", "c3"]
    assert final.version_info == s2.version_of(CLUSTER)
    eds_final = await env.recv()
    assert eds_final.type_url == ENDPOINT and names(eds_final) == ["c2", "c3"]
    assert plane.state().held_clusters == frozenset()
    # Envoy drops c1 and unsubscribes its endpoints: that needs no response.
    await env.ack(eds_final, ["c2", "c3"])
    await env.ack(final)
    await wait_until(lambda: plane.state(type_url=CLUSTER).acked_version == s2.version_of(CLUSTER))
    assert plane.state(type_url=ENDPOINT).acks == 3
    assert plane.state(type_url=ENDPOINT).responses == 3
    assert plane.state(type_url=ENDPOINT).resource_names == {"c2", "c3"}


async def test_cluster_removal_without_routing_change_is_immediate(plane):
    plane.cache.set(GW, make_resources(clusters={"c1": 1, "unused": 2}))
    env = plane.envoy()
    await subscribe_all(env, plane.cache.get(GW))
    s2 = plane.cache.set(GW, make_resources(clusters={"c1": 1}))
    cds = await env.recv()
    assert names(cds) == ["c1"] and cds.version_info == s2.version_of(CLUSTER)


async def test_route_nack_releases_held_clusters(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1}))
    env = plane.envoy()
    await subscribe_all(env, s1)
    s2 = plane.cache.set(GW, make_resources(clusters={"c2": 2}, routes={"/": "c2"}))
    union = await env.recv()
    assert names(union) == ["c1", "c2"]
    await env.request(ENDPOINT, ["c1", "c2"])
    eds = await env.recv()
    await env.ack(union)
    await env.ack(eds)
    rds = await env.recv()
    assert rds.type_url == ROUTE
    await env.nack(rds, "bad route")
    final = await env.recv()
    assert final.type_url == CLUSTER and names(final) == ["c2"]
    assert final.version_info == s2.version_of(CLUSTER)


async def test_unknown_gateway_is_served_once_its_snapshot_appears(plane, caplog):
    caplog.set_level(logging.INFO, logger="mirrorplane.xds")
    env = plane.envoy(gateway="ns/late")
    await env.request(CLUSTER, [])
    await env.request(LISTENER, [])
    await wait_until(lambda: LISTENER in plane.state().types)
    stream = plane.state()
    assert stream.gateway == "ns/late" and stream.snapshot_version is None
    waiting = [r for r in caplog.records if r.getMessage().startswith("xds.snapshot_waiting ")]
    assert len(waiting) == 1 and waiting[0].levelno == logging.INFO

    plane.cache.set(GW, make_resources())  # another Gateway: does not concern this stream
    snap = plane.cache.set("ns/late", make_resources(clusters={"c7": 7}, routes={"/": "c7"}))
    cds = await env.recv()
    assert cds.type_url == CLUSTER
    assert names(cds) == ["c7"] and cds.version_info == snap.version_of(CLUSTER)
    await env.ack(cds)
    lds = await env.recv()
    assert lds.type_url == LISTENER and lds.version_info == snap.version_of(LISTENER)
    assert plane.state().snapshot_version == snap.version
    assert len([r for r in caplog.records if r.getMessage().startswith("xds.snapshot_waiting ")]) == 1


async def test_stale_nonce_is_ignored(plane):
    plane.cache.set(GW, make_resources())
    env = plane.envoy()
    first = await subscribe_all(env, plane.cache.get(GW))
    plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 1}))
    cds = await env.recv()
    assert cds.type_url == CLUSTER
    # A NACK and a subscription change carrying the *old* nonce: ignored entirely.
    await env.request(CLUSTER, nonce=first[CLUSTER].nonce, error="stale complaint")
    await env.request(ENDPOINT, ["c1", "c2"], nonce="not-a-nonce")
    await env.ack(cds)
    await wait_until(lambda: plane.state(type_url=CLUSTER).acked_version == cds.version_info)
    ts = plane.state(type_url=CLUSTER)
    assert ts.last_nack is None and ts.nacks == 0
    assert plane.state(type_url=ENDPOINT).resource_names == {"c1"}
    # With the current EDS nonce the same subscription change is honoured.
    await env.request(ENDPOINT, ["c1", "c2"])
    eds = await env.recv()
    assert eds.type_url == ENDPOINT and names(eds) == ["c1", "c2"]


async def test_registry_lists_the_node_until_it_disconnects(plane):
    plane.cache.set(GW, make_resources())
    events: list[Event] = []
    plane.registry.add_observer(events.append)
    env = plane.envoy(node_id="envoy-a")
    other = plane.envoy(node_id="envoy-b", gateway="ns/other")
    await subscribe_all(env, plane.cache.get(GW))
    await other.request(CLUSTER, [])
    await wait_until(lambda: len(plane.registry) == 2)
    await wait_until(lambda: plane.state("envoy-a", ROUTE).acks == 1)

    [stream] = plane.registry.by_node("envoy-a")
    assert stream.gateway == GW and stream.peer.startswith("ipv4:127.0.0.1:")
    assert stream.user_agent == "fake-envoy" and stream.connected_at > 0
    assert stream.snapshot_version == plane.cache.get(GW).version
    assert [s.node_id for s in plane.registry.by_gateway(GW)] == ["envoy-a"]
    assert set(plane.registry.nodes()) == {"envoy-a", "envoy-b"}
    assert "envoy-a" in plane.registry
    dump = stream.to_dict()
    assert list(dump["types"]) == ["clusters", "endpoints", "listeners", "routes"]
    assert dump["types"]["routes"]["acked_version"] == plane.cache.get(GW).version_of(ROUTE)

    await env.close()
    await wait_until(lambda: "envoy-a" not in plane.registry)
    assert [s.node_id for s in plane.registry.streams()] == ["envoy-b"]
    kinds = [(e.kind, e.stream.node_id) for e in events if e.kind in (EventKind.CONNECT, EventKind.DISCONNECT)]
    assert (EventKind.DISCONNECT, "envoy-a") in kinds

    # Half-close (EOF) ends the stream cleanly too.
    await other.call.done_writing()
    assert await other.call.code() == grpc.StatusCode.OK
    await wait_until(lambda: len(plane.registry) == 0)


async def test_reconnect_with_current_versions_gets_no_resend(plane):
    snap = plane.cache.set(GW, make_resources())
    env = plane.envoy()
    await subscribe_all(env, snap)
    await env.close()
    await wait_until(lambda: len(plane.registry) == 0)

    # A new stream. Like Envoy, it still carries the nonces of the old stream, and the versions it
    # has.
    again = plane.envoy()
    again.nonces = dict(env.nonces)
    again.versions = {CLUSTER: snap.version_of(CLUSTER), LISTENER: snap.version_of(LISTENER)}
    await again.request(CLUSTER, [])
    await again.request(LISTENER, [])
    await again.request(ENDPOINT, ["c1"])
    eds = await again.recv()
    assert eds.type_url == ENDPOINT  # CDS and LDS were not resent
    ts = plane.state(type_url=CLUSTER)
    assert ts.responses == 0 and ts.acked_version == snap.version_of(CLUSTER)

    # An Envoy with an older version gets the current one, whatever nonce it carries.
    old = plane.envoy(node_id="envoy-2")
    old.nonces = {CLUSTER: "1-1"}
    old.versions = {CLUSTER: "0123456789abcdef"}
    await old.request(CLUSTER, [])
    cds = await old.recv()
    assert cds.type_url == CLUSTER and cds.version_info == snap.version_of(CLUSTER)


async def test_malformed_requests_close_only_their_stream(plane):
    plane.cache.set(GW, make_resources())
    good = plane.envoy(node_id="good")
    await good.request(CLUSTER, [])
    cds = await good.recv()
    assert cds.type_url == CLUSTER
    await good.ack(cds)

    # No node on the first request.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.port}")
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    # node.cluster that is not namespace/name.
    bad = plane.envoy(node_id="bad", gateway="no-namespace")
    await bad.request(CLUSTER, [])
    assert await bad.call.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same on a Delta stream.
    delta = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
    await delta.write(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
    assert await delta.code() == grpc.StatusCode.INVALID_ARGUMENT
    await channel.close()

    # The good stream is unaffected.
    plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 1}))
    assert names(await good.recv()) == ["c1", "c2"]
    assert [s.node_id for s in plane.registry.streams()] == ["good"]


async def test_a_failing_stream_is_closed_and_logged_alone(plane, monkeypatch, caplog):
    from controlplane.xds import sotw

    real = sotw.build_response

    def flaky(type_url, *args, **kwargs):
        if type_url == LISTENER:
            raise RuntimeError("boom")
        return real(type_url, *args, **kwargs)

    monkeypatch.setattr(sotw, "build_response", flaky)
    plane.cache.set(GW, make_resources())
    good = plane.envoy(node_id="good")
    await good.request(CLUSTER, [])
    cds = await good.recv()
    await good.ack(cds)

    doomed = plane.envoy(node_id="doomed")
    await doomed.request(LISTENER, [])
    assert await doomed.call.code() == grpc.StatusCode.INTERNAL
    await wait_until(lambda: "doomed" not in plane.registry)
    [record] = [r for r in caplog.records if r.getMessage().startswith("xds.stream_failed ")]
    assert "node=doomed" in record.getMessage() and record.exc_info is not None

    plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 1}))
    assert names(await good.recv()) == ["c1", "c2"]


async def test_health_and_reflection(plane):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{plane.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        listed = {s.name for s in reply.list_services_response.service}
        assert listed == {
            ADS_SERVICE_NAME,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert ADS_SERVICE_NAME == "envoy.service.discovery.v3.AggregatedDiscoveryService"


def test_registry_model_and_observers(caplog):
    registry = NodeRegistry(recent_events=3)
    seen: list[str] = []

    def broken(_event) -> None:
        raise RuntimeError("observer bug")

    registry.add_observer(broken)
    remove = registry.add_observer(lambda e: seen.append(e.kind.value))
    s = registry.open_stream(node_id="n1", gateway=GW, peer="ipv4:127.0.0.1:1", user_agent="envoy 1.40.0")
    registry.record_subscription(s, CLUSTER, [], wildcard=True)
    registry.record_sent(s, CLUSTER, version="v1", nonce="a", resources=2)
    assert s.types[CLUSTER].in_flight
    registry.record_ack(s, CLUSTER, version="v1", nonce="a")
    registry.record_sent(s, CLUSTER, version="v2", nonce="b", resources=3)
    nack = registry.record_nack(s, CLUSTER, version="v2", nonce="b", message="bad", code=3, kept_version="v1")
    ts = s.types[CLUSTER]
    assert ts.acked_version == "v1" and ts.nacked and ts.last_nack is nack and s.last_nack is nack
    assert (ts.responses, ts.acks, ts.nacks) == (2, 1, 1)
    assert seen == ["connect", "subscribe", "send", "ack", "send", "nack"]
    assert [e.kind.value for e in registry.recent] == ["connect", "ack", "nack"]
    assert caplog.text.count("registry.observer_failed") == 6  # logged, the other observer still ran
    json.dumps(registry.to_dict())
    json.dumps([e.to_dict() for e in registry.recent])
    remove()
    registry.close_stream(s)
    registry.close_stream(s)  # idempotent
    assert seen[-1] == "nack" and len(registry) == 0
    assert registry.recent[-1].kind is EventKind.DISCONNECT


def test_build_response_from_bytes():
    resp = build_response(ROUTE, "v1", [b"\n\x01r"], "n1", control_plane_id=None)
    assert resp.version_info == "v1" and resp.nonce == "n1" and resp.type_url == ROUTE
    assert [r.type_url for r in resp.resources] == [ROUTE]
    assert route_pb2.RouteConfiguration.FromString(resp.resources[0].value).name == "r"
    assert not resp.HasField("control_plane")


# -- with a real Envoy, on State-of-the-World and on Delta ADS ------------------------------------


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
def ads_api_type(request) -> str:
    return request.param


async def test_real_envoy_serves_traffic_and_survives_a_nack(plane, ads_api_type):
    from controlplane.localenvoy import LocalEnvoy

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello from backend")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    backend_port, listener_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()

    good = plane.cache.set(
        GW, make_resources(clusters={"backend": backend_port}, routes={"/": "backend"}, listener_port=listener_port)
    )
    try:
        async with (
            LocalEnvoy(
                node_id="real-1", gateway=GW, xds_port=plane.port, admin_port=0, ads_api_type=ads_api_type
            ) as envoy,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        ):

            async def through_envoy() -> bool:
                async with http.get(f"http://127.0.0.1:{listener_port}/hi") as resp:
                    return resp.status == 200 and await resp.text() == "hello from backend"

            await envoy.wait_for(through_envoy, timeout=30)

            def all_acked(version: dict[str, str]) -> bool:
                streams = plane.registry.by_node("real-1")
                return bool(streams) and all(
                    streams[0].types.get(t) is not None and streams[0].types[t].acked_version == v
                    for t, v in version.items()
                )

            await wait_until(lambda: all_acked(good.versions()), timeout=10)
            [stream] = plane.registry.by_node("real-1")
            assert stream.user_agent.startswith("envoy 1.")

            # Two virtual hosts with the same domain: Envoy rejects the RouteConfiguration.
            bad_route = route_pb2.RouteConfiguration(name="r")
            for vh_name in ("a", "b"):
                vh = bad_route.virtual_hosts.add(name=vh_name, domains=["dup.example"])
                r = vh.routes.add()
                r.match.prefix = "/"
                r.route.cluster = "backend"
            bad = plane.cache.set(
                GW,
                make_resources(clusters={"backend": backend_port}, route=bad_route, listener_port=listener_port),
            )
            assert bad.changed_types(good) == [ROUTE]
            await wait_until(lambda: stream.types[ROUTE].last_nack is not None, timeout=10)
            nack = stream.types[ROUTE].last_nack
            assert nack.version == bad.version_of(ROUTE)
            assert nack.kept_version == good.version_of(ROUTE)
            assert "Only unique values for domains are permitted" in nack.message
            assert "dup.example" in nack.message
            assert stream.types[ROUTE].acked_version == good.version_of(ROUTE)
            assert await envoy.stat("cluster_manager.cds.update_rejected") in (0, None)

            # Envoy keeps the last good routes; traffic still flows.
            assert await through_envoy()
            assert stream.types[ROUTE].responses == 2  # the rejected version was not resent
    finally:
        await runner.cleanup()


async def test_real_envoy_cluster_swap_keeps_serving(plane, ads_api_type):
    """Route / moves from cluster "old" to "new" and "old" is removed: no request fails."""
    from controlplane.localenvoy import LocalEnvoy

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    backend_port, listener_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()

    cds_sent: list[list[str]] = []

    def on_event(event) -> None:
        if event.kind is EventKind.SEND and event.type_url == CLUSTER:
            cds_sent.append(sorted(event.stream.held_clusters))

    plane.registry.add_observer(on_event)
    first = plane.cache.set(
        GW, make_resources(clusters={"old": backend_port}, routes={"/": "old"}, listener_port=listener_port)
    )
    try:
        async with (
            LocalEnvoy(
                node_id="real-2", gateway=GW, xds_port=plane.port, admin_port=0, ads_api_type=ads_api_type
            ) as envoy,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        ):

            async def ok() -> bool:
                async with http.get(f"http://127.0.0.1:{listener_port}/") as resp:
                    return resp.status == 200

            await envoy.wait_for(ok, timeout=30)
            [stream] = plane.registry.by_node("real-2")
            await wait_until(lambda: stream.types[ROUTE].acked_version == first.version_of(ROUTE))

            statuses: list[int] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    async with http.get(f"http://127.0.0.1:{listener_port}/") as resp:
                        statuses.append(resp.status)

            loader = asyncio.ensure_future(load())
            await wait_until(lambda: len(statuses) >= 5)
            swapped = plane.cache.set(
                GW, make_resources(clusters={"new": backend_port}, routes={"/": "new"}, listener_port=listener_port)
            )
            await wait_until(lambda: stream.types[CLUSTER].acked_version == swapped.version_of(CLUSTER), timeout=10)

            async def only_new_cluster() -> bool:
                dump = await envoy.config_dump("dynamic_active_clusters")
                names_ = {c["cluster"]["name"] for c in dump["configs"]}
                return names_ == {"new"}

            await envoy.wait_for(only_new_cluster, timeout=10)
            count = len(statuses)
            await wait_until(lambda: len(statuses) >= count + 5)
            stop.set()
            await loader
            assert set(statuses) == {200}
            # Union first (old held), then the final CDS.
            assert cds_sent[-2:] == [["old"], []]
            assert stream.held_clusters == frozenset()
    finally:
        await runner.cleanup()


async def test_real_envoy_reconnect_to_restarted_control_plane_gets_no_churn(ads_api_type):
    """A restarted control plane rebuilds the same versions: Envoy's CDS/LDS are not resent."""
    from controlplane.localenvoy import LocalEnvoy

    xds_port, listener_port = free_port(), free_port()

    def resources() -> Resources:
        return make_resources(clusters={"c1": 1}, listener_port=listener_port)

    cache1, registry1 = SnapshotCache(), NodeRegistry()
    snap = cache1.set(GW, resources())
    server1 = build_server(cache1, registry1, address=f"127.0.0.1:{xds_port}")
    await server1.start()
    server2 = None
    try:
        async with LocalEnvoy(
            node_id="real-3", gateway=GW, xds_port=xds_port, admin_port=0, ads_api_type=ads_api_type
        ) as envoy:

            def settled(registry: NodeRegistry) -> bool:
                streams = registry.by_node("real-3")
                return bool(streams) and all(
                    t in streams[0].types and streams[0].types[t].acked_version == v for t, v in snap.versions().items()
                )

            await wait_until(lambda: settled(registry1), timeout=30)
            # What Envoy did with its config: updates applied, and clusters/listeners (re)built.
            churn: tuple[str, ...] = (
                "cluster_manager.cds.update_success",
                "listener_manager.lds.update_success",
                "cluster_manager.cluster_added",
                "cluster_manager.cluster_modified",
                "listener_manager.listener_added",
                "listener_manager.listener_modified",
            )
            before = {name: await envoy.stat(name) for name in churn}

            await server1.stop(None)
            cache2, registry2 = SnapshotCache(), NodeRegistry()  # a new process, as far as state goes
            cache2.set(GW, resources())
            server2 = build_server(cache2, registry2, address=f"127.0.0.1:{xds_port}")
            await server2.start()
            await wait_until(lambda: settled(registry2), timeout=30)

            [stream] = registry2.by_node("real-3")
            for t in (CLUSTER, LISTENER):
                if ads_api_type == "GRPC":
                    assert stream.types[t].responses == 0
                else:
                    # Delta answers the first request of each type, here with nothing in it (an
                    # empty update for Envoy's counters, which rebuilds nothing).
                    assert (stream.types[t].responses, stream.types[t].sent_resources) == (1, 0)
            if ads_api_type != "GRPC":
                churn = churn[2:]
            assert {name: await envoy.stat(name) for name in churn} == {n: before[n] for n in churn}
    finally:
        await server1.stop(None)
        if server2 is not None:
            await server2.stop(None)


async def test_real_envoy_applies_a_cluster_only_change_without_waiting_for_its_endpoints(plane, ads_api_type):
    """A changed cluster is re-created and warms until its endpoints arrive again; the control
    plane answers its EDS re-request though the endpoints did not change, so the change applies at
    once, not after ``initial_fetch_timeout`` (set to 120 s here so that the two cannot be told
    apart only by luck: the wait below gives up long before)."""
    from controlplane.localenvoy import LocalEnvoy

    fetch_timeout, listener_port = 120, free_port()

    def resources(connect_timeout: int) -> Resources:
        res = with_connect_timeout(make_resources(clusters={"c1": 1}, listener_port=listener_port), connect_timeout)
        for cluster in res.clusters.values():
            cluster.eds_cluster_config.eds_config.initial_fetch_timeout.seconds = fetch_timeout
        return res

    first = plane.cache.set(GW, resources(1))
    async with LocalEnvoy(
        node_id="real-4", gateway=GW, xds_port=plane.port, admin_port=0, ads_api_type=ads_api_type
    ) as envoy:

        async def applied(connect_timeout: str) -> bool:
            dump = await envoy.config_dump("dynamic_active_clusters")
            timeouts = {c["cluster"]["name"]: c["cluster"]["connect_timeout"] for c in dump.get("configs", [])}
            return timeouts == {"c1": connect_timeout} and await envoy.stat("cluster_manager.warming_clusters") == 0

        await envoy.wait_for(lambda: applied("1s"), timeout=30)
        [stream] = plane.registry.by_node("real-4")
        await wait_until(lambda: stream.types[ENDPOINT].acked_version == first.version_of(ENDPOINT), timeout=10)

        second = plane.cache.set(GW, resources(7))
        assert second.changed_types(first) == [CLUSTER]
        await envoy.wait_for(lambda: applied("7s"), timeout=fetch_timeout / 2)
        await wait_until(lambda: stream.types[CLUSTER].acked_version == second.version_of(CLUSTER), timeout=10)
        assert await envoy.stat("cluster_manager.cluster_modified") == 1
        assert stream.types[ENDPOINT].responses == 2  # the endpoints, resent once for the warming cluster
