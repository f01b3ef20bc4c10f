"""controlplane.xds.cache: content-hash versions and the snapshot cache."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, struct_pb2

from controlplane.xds.cache import Snapshot, SnapshotCache, bytes_version, content_version
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, Encoded, Resources

HERE = Path(__file__).resolve().parent


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def make_resources(
    *,
    endpoint_port: int = 8080,
    listener_port: int = 10000,
    metadata_order: tuple[str, ...] = ("a", "b", "c"),
) -> Resources:
    """One EDS cluster, its endpoints, a listener with RDS "r", and route "r"."""
    cluster = cluster_pb2.Cluster(name="c1", type=cluster_pb2.Cluster.EDS)
    cluster.connect_timeout.seconds = 1
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    # A map field: its serialization must not depend on insertion order.
    fields = cluster.metadata.filter_metadata["mirrorplane"].fields
    for key in metadata_order:
        fields[key].string_value = key.upper()
    # A map inside an Any, packed deterministically as the xDS translator does: versions must not
    # depend on the process (the subprocess test below runs this with different hash seeds).
    packed = struct_pb2.Struct()
    for i in range(40):
        packed.fields[f"k{i}"].number_value = i
    cluster.metadata.typed_filter_metadata["mirrorplane.test"].Pack(packed, deterministic=True)

    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c1")
    sa = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = "127.0.0.1", endpoint_port

    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="ingress")
    hcm.rds.route_config_name = "r"
    hcm.rds.config_source.ads.SetInParent()
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
    listener = listener_pb2.Listener(name="l1")
    lsa = listener.address.socket_address
    lsa.address, lsa.port_value = "127.0.0.1", listener_port
    listener.filter_chains.add().filters.add(
        name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm)
    )

    route = route_pb2.RouteConfiguration(name="r")
    vh = route.virtual_hosts.add(name="vh", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = "c1"

    return Resources(clusters={"c1": cluster}, endpoints={"c1": cla}, listeners={"l1": listener}, routes={"r": route})


def test_build_serializes_and_versions_each_type():
    res = make_resources()
    snap = Snapshot.build("ns/gw", res)
    assert snap.gateway == "ns/gw"
    assert list(snap.types) == list(PUSH_ORDER)
    entry = snap[CLUSTER].entries["c1"]
    original = res.clusters["c1"].SerializeToString()
    decoded = cluster_pb2.Cluster.FromString(entry.data)
    # Same resource; the nested Any payload was re-packed deterministically, on a copy.
    assert decoded.name == "c1"
    key = "mirrorplane.test"
    got, want = struct_pb2.Struct(), struct_pb2.Struct()
    decoded.metadata.typed_filter_metadata[key].Unpack(got)
    res.clusters["c1"].metadata.typed_filter_metadata[key].Unpack(want)
    assert got == want
    assert decoded.metadata.typed_filter_metadata[key].value == want.SerializeToString(deterministic=True)
    assert res.clusters["c1"].SerializeToString() == original
    assert snap[ROUTE].entries["r"].data == res.routes["r"].SerializeToString(deterministic=True)
    assert entry.version == bytes_version(entry.data)
    assert snap.version_of(CLUSTER) == content_version([("c1", entry.version.encode())])
    assert len(snap.version) == len(entry.version) == 16
    assert len({snap.version_of(t) for t in PUSH_ORDER}) == 4
    types = snap.summary()["types"]
    assert isinstance(types, dict)
    assert types["endpoints"] == {"version": snap.version_of(ENDPOINT), "count": 1}


def test_same_content_gives_same_versions_and_keeps_the_snapshot_object():
    cache = SnapshotCache()
    first = cache.set("ns/gw", make_resources())
    again = cache.set("ns/gw", make_resources())  # equal content, new message objects
    assert again is first
    assert cache.get("ns/gw") is first
    # Map insertion order does not matter (deterministic serialization).
    reordered = Snapshot.build("ns/gw", make_resources(metadata_order=("c", "a", "b")))
    assert reordered.versions() == first.versions()
    assert reordered.version == first.version


def test_versions_are_stable_across_processes():
    """A restarted control plane computes the same versions (no counters, no timestamps)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from test_xds_cache import make_resources;"
        "from controlplane.xds.cache import Snapshot;"
        "s = Snapshot.build('ns/gw', make_resources());"
        "print(json.dumps({'all': s.version, 'types': s.versions(),"
        " 'res': {t: s[t].resource_versions() for t in s.types}}))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(HERE)], env=env, check=True, capture_output=True, text=True
        ).stdout
        outputs.append(json.loads(out))
    here = Snapshot.build("ns/gw", make_resources())
    assert outputs[0] == outputs[1]
    assert outputs[0]["all"] == here.version
    assert outputs[0]["types"] == here.versions()


def test_changed_endpoint_changes_only_the_endpoint_versions():
    before = Snapshot.build("ns/gw", make_resources())
    after = Snapshot.build("ns/gw", make_resources(endpoint_port=9090))
    assert after.changed_types(before) == [ENDPOINT]
    assert after.version != before.version
    for t in (CLUSTER, LISTENER, ROUTE):
        assert after.version_of(t) == before.version_of(t)
        assert after[t].resource_versions() == before[t].resource_versions()
    assert after[ENDPOINT].entries["c1"].version != before[ENDPOINT].entries["c1"].version


def test_type_version_depends_on_names_and_bytes_not_order():
    assert content_version([("a", b"1"), ("b", b"2")]) == content_version([("b", b"2"), ("a", b"1")])
    assert content_version([("a", b"1")]) != content_version([("b", b"1")])
    # Length-prefixed: moving bytes between name and value changes the hash.
    assert content_version([("ab", b"c")]) != content_version([("a", b"bc")])


def test_build_rejects_wrong_type_and_name_mismatch():
    res = make_resources()
    with pytest.raises(ValueError, match="expected envoy.config.cluster.v3.Cluster"):
        Snapshot.build("ns/gw", Resources(clusters={"c1": res.routes["r"]}))
    with pytest.raises(ValueError, match="carries name 'c1'"):
        Snapshot.build("ns/gw", Resources(endpoints={"other": res.endpoints["c1"]}))


async def test_waiters_wake_on_change_only():
    cache = SnapshotCache()
    first = cache.set("ns/gw", make_resources())
    waiters = [asyncio.ensure_future(cache.wait_for_change("ns/gw", first)) for _ in range(500)]
    other = asyncio.ensure_future(cache.wait_for_change("ns/other", None))
    for _ in range(3):
        await asyncio.sleep(0)
    cache.set("ns/gw", make_resources())  # unchanged: nobody wakes
    for _ in range(3):
        await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)

    second = cache.set("ns/gw", make_resources(endpoint_port=1))
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert all(r is second for r in results)
    assert not other.done()

    # Already different: returns at once. Removal wakes with None.
    assert await cache.wait_for_change("ns/gw", first) is second
    removed = asyncio.ensure_future(cache.wait_for_change("ns/gw", second))
    await asyncio.sleep(0)
    cache.remove("ns/gw")
    assert await asyncio.wait_for(removed, 5) is None
    assert cache.gateways() == []
    other.cancel()


def test_gateways_and_remove():
    cache = SnapshotCache()
    cache.set("b/gw", make_resources())
    cache.set("a/gw", make_resources())
    assert cache.gateways() == ["a/gw", "b/gw"]
    assert "a/gw" in cache and len(cache) == 2
    cache.remove("a/gw")
    cache.remove("missing/gw")
    assert cache.get("a/gw") is None
    assert cache.gateways() == ["b/gw"]


def test_serialized_resources_are_served_as_given_and_read_as_messages_on_demand() -> None:
    route = route_pb2.RouteConfiguration(name="r")
    route.virtual_hosts.add(name="vh", domains=["*"])
    data, digest = route.SerializeToString(deterministic=True), b"\x01" * 32
    encoded = Encoded(route_pb2.RouteConfiguration, {"r": data}, {"r": digest})
    snap = Snapshot.build("gw", Resources(routes=encoded))
    entry = snap[ROUTE].entries["r"]
    assert entry.data is data, "the bytes are taken as they are"
    assert entry.version == digest.hex()[:16]
    assert snap.resources is not None and snap.resources.routes["r"] == route
    again = Snapshot.build(
        "gw", Resources(routes=Encoded(route_pb2.RouteConfiguration, {"r": data}, {"r": digest})), snap
    )
    assert again[ROUTE] is snap[ROUTE], "the same bytes object: the type is reused"
    wrong = Encoded(cluster_pb2.Cluster, {"r": data}, {"r": digest})
    with pytest.raises(ValueError, match="routes holds Cluster"):
        Snapshot.build("gw", Resources(routes=wrong))
