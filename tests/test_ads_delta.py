"""controlplane.xds.delta: Delta (incremental) ADS over real gRPC streams, and a real Envoy on it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.xds.cache import Snapshot
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from support import wait_until
from test_ads_server import (  # noqa: F401 - pytest finds the fixture here
    GW,
    MESSAGE_CLASSES,
    make_resources,
    plane_fixture,
    with_connect_timeout,
)


class DeltaEnvoy:
    """A Delta ADS client stream driven by the test, speaking like Envoy."""

    def __init__(self, port: int, node_id: str = "envoy-1", gateway: str = GW):
        self.node_id, self.gateway = node_id, gateway
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).DeltaAggregatedResources()
        self._first = True
        self.have: dict[str, dict[str, str]] = {t: {} for t in MESSAGE_CLASSES}
        """Type → name → version, as Envoy keeps it (for initial_resource_versions)."""

    async def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial: Mapping[str, str] | None = None,
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=dict(initial or {}),
        )
        if self._first:
            req.node.id, req.node.cluster = self.node_id, self.gateway
            req.node.user_agent_name = "fake-envoy"
            self._first = False
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), timeout)
        assert response is not grpc.aio.EOF, "stream ended"
        have = self.have[response.type_url]
        cls = MESSAGE_CLASSES[response.type_url]
        for r in response.resources:
            assert r.resource.type_url == response.type_url
            message = cls.FromString(r.resource.value)
            assert r.name == (message.cluster_name if response.type_url == ENDPOINT else message.name)
            have[r.name] = r.version
        for name in response.removed_resources:
            have.pop(name, None)
        return response

    async def ack(self, response, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = ()) -> None:
        await self.request(response.type_url, subscribe, unsubscribe, nonce=response.nonce)

    async def nack(self, response, message: str) -> None:
        await self.request(response.type_url, nonce=response.nonce, error=message)

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def got(response) -> tuple[str, list[str], list[str]]:
    """(short type, resource names, removed names) of a response."""
    return (
        response.type_url.rsplit(".", 1)[1],
        sorted(r.name for r in response.resources),
        sorted(response.removed_resources),
    )


def delta_envoy(plane, node_id: str = "envoy-1", gateway: str = GW) -> DeltaEnvoy:
    env = DeltaEnvoy(plane.port, node_id, gateway)
    plane.envoys.append(env)
    return env


async def subscribe_all(env: DeltaEnvoy, snap: Snapshot, clusters: Iterable[str] = ("c1",)) -> None:
    """Envoy's startup, all ACKed: CDS (wildcard), EDS for its clusters before the CDS ACK, then
    LDS (wildcard) and RDS for its route before the LDS ACK."""
    await env.request(CLUSTER)
    cds = await env.recv()
    await env.request(ENDPOINT, clusters)
    eds = await env.recv()
    await env.ack(cds)
    await env.ack(eds)
    await env.request(LISTENER)
    lds = await env.recv()
    await env.request(ROUTE, ["r"])
    rds = await env.recv()
    await env.ack(lds)
    await env.ack(rds)
    for response in (cds, eds, lds, rds):
        assert response.system_version_info == snap.version_of(response.type_url)
        assert not response.removed_resources


async def test_wildcard_and_named_subscriptions(plane):
    snap = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 8081}))
    env = delta_envoy(plane)
    await env.request(CLUSTER)  # empty first request: wildcard
    await env.request(LISTENER, ["*"])
    cds = await env.recv()
    assert got(cds) == ("Cluster", ["c1", "c2"], [])
    assert cds.system_version_info == snap.version_of(CLUSTER)
    assert cds.control_plane.identifier == "mirrorplane"
    assert {r.name: r.version for r in cds.resources} == snap[CLUSTER].resource_versions()
    assert cds.resources[0].resource.value == snap[CLUSTER].entries["c1"].data

    # Named: what exists is sent, what does not is reported removed (Delta's "does not exist").
    await env.request(ENDPOINT, ["c1", "missing"])
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c1"], ["missing"])
    # Listeners wait until clusters and endpoints are applied.
    assert plane.state(type_url=LISTENER).responses == 0
    await env.ack(cds)
    await env.ack(eds)
    lds = await env.recv()
    assert got(lds) == ("Listener", ["l1"], [])
    await env.request(ROUTE, ["r"])
    assert got(await env.recv()) == ("RouteConfiguration", ["r"], [])

    # ACKs land in the same registry state as SotW's.
    await wait_until(lambda: plane.state(type_url=ENDPOINT).acked_version == snap.version_of(ENDPOINT))
    ts = plane.state(type_url=CLUSTER)
    assert ts.acked_version == snap.version_of(CLUSTER) and ts.acks == 1 and ts.responses == 1
    assert ts.wildcard and plane.state(type_url=ENDPOINT).resource_names == {"c1", "missing"}
    assert ts.acked_entries == snap[CLUSTER].entries  # per resource, for CSDS

    # Subscribing to one more name sends that one only; "missing" is not reported twice.
    await env.request(ENDPOINT, ["c2"])
    assert got(await env.recv()) == ("ClusterLoadAssignment", ["c2"], [])


async def test_a_change_to_one_resource_sends_only_it(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2}))
    env = delta_envoy(plane)
    await subscribe_all(env, s1, ["c1", "c2"])

    # Endpoint-only change of c2: one ClusterLoadAssignment, nothing else.
    s2 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 3}))
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c2"], [])
    assert eds.system_version_info == s2.version_of(ENDPOINT)
    assert eds.resources[0].version == s2[ENDPOINT].entries["c2"].version
    await env.ack(eds)
    # The next response is the route change that follows: nothing else was sent in between.
    plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 3}, routes={"/x": "c2"}))
    assert got(await env.recv()) == ("RouteConfiguration", ["r"], [])
    for t in (CLUSTER, LISTENER):
        assert plane.state(type_url=t).responses == 1
    assert plane.state(type_url=ENDPOINT).responses == 2


async def test_nack_is_recorded_and_not_resent(plane):
    s1 = plane.cache.set(GW, make_resources())
    env = delta_envoy(plane)
    await subscribe_all(env, s1)

    bad = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c9": 8089}, routes={"/": "c9"}))
    cds = await env.recv()
    assert got(cds) == ("Cluster", ["c9"], [])  # c1 is unchanged
    await env.nack(cds, "cluster c9: invalid")
    await wait_until(lambda: plane.state(type_url=CLUSTER).last_nack is not None)
    ts = plane.state(type_url=CLUSTER)
    assert ts.last_nack.version == bad.version_of(CLUSTER) and ts.last_nack.nonce == cds.nonce
    assert ts.last_nack.kept_version == s1.version_of(CLUSTER)
    assert ts.last_nack.message == "cluster c9: invalid"
    assert ts.acked_version == s1.version_of(CLUSTER) and ts.nacks == 1

    # Envoy has decided: the routes go on, and the rejected c9 is not sent again.
    rds = await env.recv()
    assert got(rds) == ("RouteConfiguration", ["r"], [])
    await env.ack(rds)
    await env.request(ENDPOINT, ["c9"])
    probe = await env.recv()
    assert got(probe) == ("ClusterLoadAssignment", ["c9"], [])
    assert plane.state(type_url=CLUSTER).responses == 2
    await env.ack(probe)

    # A later, different c9 is sent normally.
    plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c9": 9}, routes={"/": "c9"}))
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c9"], [])
    plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c8": 8}, routes={"/": "c8"}))
    cds2 = await env.recv()
    assert got(cds2) == ("Cluster", ["c8"], [])  # c9 held: the Envoy's routes may still use it


async def test_cluster_update_resends_its_unchanged_endpoints(plane):
    """Envoy re-creates an updated cluster, which warms until it gets its endpoints, and on Delta
    does not re-subscribe to them (the old cluster still watches the name): the unchanged
    ClusterLoadAssignment follows the CDS update unasked. Clusters that did not change get none."""
    first = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 8081}))
    env = delta_envoy(plane)
    await subscribe_all(env, first, clusters=("c1", "c2"))
    eds_sent = dict(env.have[ENDPOINT])
    res = make_resources(clusters={"c1": 8080, "c2": 8081})
    c1 = with_connect_timeout(res, 5).clusters["c1"]
    second = plane.cache.set(GW, dataclasses.replace(res, clusters={**res.clusters, "c1": c1}))
    assert second.changed_types(first) == [CLUSTER]
    cds = await env.recv()
    assert got(cds) == ("Cluster", ["c1"], [])
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c1"], [])
    assert eds.resources[0].version == eds_sent["c1"]
    assert eds.system_version_info == first.version_of(ENDPOINT)
    await env.ack(cds)
    await env.ack(eds)

    # A subscribe of a name the Envoy has is answered with it too; nothing else is resent.
    await env.request(ENDPOINT, ["c2"])
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c2"], [])
    await env.ack(eds)
    third = plane.cache.set(GW, make_resources(clusters={"c1": 8080, "c2": 8081}, listener_port=10001))
    assert third.changed_types(second) == [CLUSTER, LISTENER]
    assert got(await env.recv()) == ("Cluster", ["c1"], [])  # c1 back as it was: its endpoints again
    assert got(await env.recv()) == ("ClusterLoadAssignment", ["c1"], [])
    assert plane.state(type_url=ENDPOINT).responses == 4


async def test_cluster_removal_waits_for_the_routes_ack(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2}, routes={"/": "c1", "/2": "c2"}))
    env = delta_envoy(plane)
    await subscribe_all(env, s1, ["c1", "c2"])

    s2 = plane.cache.set(GW, make_resources(clusters={"c2": 2, "c3": 3}, routes={"/": "c3", "/2": "c2"}))
    cds = await env.recv()
    assert got(cds) == ("Cluster", ["c3"], [])  # c1 is not removed yet
    assert plane.state().held_clusters == {"c1"}
    assert cds.system_version_info not in (s1.version_of(CLUSTER), s2.version_of(CLUSTER))
    await env.request(ENDPOINT, ["c3"])  # like Envoy: before the CDS ACK
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c3"], [])  # c1's endpoints are kept
    await env.ack(cds)
    await env.ack(eds)
    rds = await env.recv()
    assert got(rds) == ("RouteConfiguration", ["r"], [])
    assert plane.state().held_clusters == {"c1"}

    await env.ack(rds)
    final = await env.recv()
    assert got(final) == ("Cluster", [], ["c1"])
    assert final.system_version_info == s2.version_of(CLUSTER)
    assert got(await env.recv()) == ("ClusterLoadAssignment", [], ["c1"])
    assert plane.state().held_clusters == frozenset()
    # Envoy drops c1 and unsubscribes its endpoints: no response for that.
    await env.ack(final)
    await env.request(ENDPOINT, unsubscribe=["c1"])
    await wait_until(lambda: plane.state(type_url=ENDPOINT).resource_names == {"c2", "c3"})
    assert plane.state(type_url=CLUSTER).acked_version == s2.version_of(CLUSTER)
    assert env.have[CLUSTER].keys() == {"c2", "c3"}


async def test_removal_without_routing_change_is_immediate(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "unused": 2}))
    env = delta_envoy(plane)
    await subscribe_all(env, s1, ["c1", "unused"])
    plane.cache.set(GW, make_resources(clusters={"c1": 1}))
    assert got(await env.recv()) == ("Cluster", [], ["unused"])


async def test_unsubscribe_and_wildcard_removal(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2}))
    env = delta_envoy(plane)
    await subscribe_all(env, s1, ["c1", "c2"])

    await env.request(ENDPOINT, unsubscribe=["c2"])
    await wait_until(lambda: plane.state(type_url=ENDPOINT).resource_names == {"c1"})
    # c2's endpoints change: not subscribed any more, so nothing is sent for them (the next
    # response is c1's change that follows).
    plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 22}))
    plane.cache.set(GW, make_resources(clusters={"c1": 11, "c2": 22}))
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c1"], [])
    await env.ack(eds)
    # Subscribing again sends the current c2.
    await env.request(ENDPOINT, ["c2"])
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c2"], [])
    await env.ack(eds)

    # Leaving the wildcard: the clusters it covered leave the subscription and are removed.
    await env.request(CLUSTER, ["c1"], ["*"])
    cds = await env.recv()
    assert got(cds) == ("Cluster", [], ["c2"])
    assert not plane.state(type_url=CLUSTER).wildcard


async def test_stale_nonce_ack_is_ignored_but_its_subscription_applies(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2}))
    env = delta_envoy(plane)
    await subscribe_all(env, s1)
    plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2, "c3": 3}))
    cds = await env.recv()
    await env.request(CLUSTER, nonce="not-the-nonce", error="stale complaint")
    await env.request(ENDPOINT, ["c2"], nonce="not-the-nonce")
    eds = await env.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c2"], [])
    ts = plane.state(type_url=CLUSTER)
    assert ts.nacks == 0 and ts.in_flight
    await env.ack(cds)
    await wait_until(lambda: not plane.state(type_url=CLUSTER).in_flight)


async def test_reconnect_with_initial_versions_gets_only_changes(plane):
    s1 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 2}))
    env = delta_envoy(plane)
    await subscribe_all(env, s1, ["c1", "c2"])
    await env.close()
    await wait_until(lambda: len(plane.registry) == 0)

    # While it was away, c2's endpoints changed and c3 appeared.
    s2 = plane.cache.set(GW, make_resources(clusters={"c1": 1, "c2": 22, "c3": 3}, routes={"/": "c1", "/3": "c3"}))
    again = delta_envoy(plane)
    await again.request(CLUSTER, initial=env.have[CLUSTER])
    cds = await again.recv()
    assert got(cds) == ("Cluster", ["c3"], [])
    await again.request(ENDPOINT, ["c1", "c2", "c3"], initial=env.have[ENDPOINT])
    eds = await again.recv()
    assert got(eds) == ("ClusterLoadAssignment", ["c2", "c3"], [])
    await again.ack(cds)
    await again.ack(eds)
    # Listeners are current: an empty answer to ACK, nothing in it.
    await again.request(LISTENER, initial=env.have[LISTENER])
    lds = await again.recv()
    assert got(lds) == ("Listener", [], [])
    assert lds.system_version_info == s2.version_of(LISTENER) and lds.nonce
    await again.request(ROUTE, ["r"], initial=env.have[ROUTE])
    assert got(await again.recv()) == ("RouteConfiguration", ["r"], [])
    await again.ack(lds)
    await wait_until(lambda: plane.state(type_url=LISTENER).acked_version == s2.version_of(LISTENER))
    assert plane.state(type_url=LISTENER).sent_resources == 0

    # A resource deleted while the Envoy was away is removed on reconnect.
    third = delta_envoy(plane, node_id="envoy-3")
    await third.request(CLUSTER, initial={**env.have[CLUSTER], "gone": "0123456789abcdef"})
    assert got(await third.recv()) == ("Cluster", ["c3"], ["gone"])


async def test_malformed_delta_request_closes_only_its_stream(plane):
    plane.cache.set(GW, make_resources())
    bad = delta_envoy(plane, gateway="no-namespace")
    await bad.request(CLUSTER)
    assert await bad.call.code() == grpc.StatusCode.INVALID_ARGUMENT
    good = delta_envoy(plane, node_id="good")
    await good.request(CLUSTER)
    assert got(await good.recv()) == ("Cluster", ["c1"], [])


# -- a real Envoy on Delta ADS ------------------------------------------------------------------


async def test_real_envoy_on_delta_mirrors_the_seed_scenario_and_survives_a_nack(tmp_path):
    from controlplane.xds.resources import SHORT_NAMES, Resources
    from e2e import GATEWAY, digest, start_stack

    stack = await start_stack(tmp_path, envoy_options={"ads_api_type": "DELTA_GRPC"})
    try:
        dump = await stack.envoy.config_dump()
        ads = dump["configs"][0]["bootstrap"]["dynamic_resources"]["ads_config"]
        assert ads["api_type"] == "DELTA_GRPC"

        # The seed POST: answered by the primary, mirrored byte for byte.
        body = b"Hello world"
        assert await stack.request("/", data=body) == (200, body)
        mirror = stack.echos["pipy-mirror"].log
        await wait_until(lambda: any(h.get("body") == digest(body) for h in mirror.heads()))

        # Envoy rejects a RouteConfiguration with the same domain in two virtual hosts.
        good = stack.plane.cache[GATEWAY]
        [stream] = stack.plane.registry.by_node("e2e")
        await wait_until(lambda: stream.types[ROUTE].acked_version == good.version_of(ROUTE))
        messages = {
            SHORT_NAMES[t]: {n: MESSAGE_CLASSES[t].FromString(e.data) for n, e in good[t].entries.items()}
            for t in MESSAGE_CLASSES
        }
        for rc in messages["routes"].values():
            for name in ("dup-a", "dup-b"):
                vh = rc.virtual_hosts.add(name=name, domains=["dup.example"])
                vh.routes.add().CopyFrom(rc.virtual_hosts[0].routes[0])
        bad = stack.plane.cache.set(GATEWAY, Resources(**messages))
        assert bad.changed_types(good) == [ROUTE]
        await wait_until(lambda: stream.types[ROUTE].last_nack is not None, timeout=10)
        nack = stream.types[ROUTE].last_nack
        assert nack is not None
        assert nack.version == bad.version_of(ROUTE) and nack.kept_version == good.version_of(ROUTE)
        assert "dup.example" in nack.message
        assert stream.types[ROUTE].acked_version == good.version_of(ROUTE)

        # Envoy keeps its last good routes: traffic still flows, and is still mirrored.
        again = b"after the NACK"
        assert await stack.request("/", data=again) == (200, again)
        await wait_until(lambda: any(h.get("body") == digest(again) for h in mirror.heads()))
        assert stream.types[ROUTE].responses == 2  # the rejected version was not resent
    finally:
        await stack.exits.aclose()
