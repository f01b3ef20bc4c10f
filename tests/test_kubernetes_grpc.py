"""GRPCRoute in a cluster: kubectl apply of a GRPCRoute → the Kubernetes provider → a real Envoy
mirroring gRPC calls to real gRPC echo servers → status that `kubectl get grpcroute -o yaml` shows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
import yaml

from controlplane.echo.grpcecho import grpcecho_pb2 as pb
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER
from controlplane.localenvoy import LocalEnvoy
from e2e import EchoLog, mirror_policies
from kube import Cluster, cluster, control_plane, endpoint_slice
from support import free_port, wait_until
from test_e2e_grpc import ECHO, add_grpc_echo

GRPC_PORT = 8001  # the Gateway listener the GRPCRoute attaches to (the seed's HTTP one is 8000)
GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grpc-gateway, namespace: server}
spec:
  gatewayClassName: mirrorplane
  listeners:
  - {name: grpc, protocol: HTTP, port: 8001}
"""
SERVICES = """apiVersion: v1
kind: Namespace
metadata: {name: server}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: mirrorplane}
spec: {controllerName: mirrorplane.io/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo, namespace: server}
spec:
  ports: [{name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo-mirror, namespace: server}
spec:
  ports: [{name: grpc, port: 9090}]
"""


def grpc_route(mirror: bool) -> str:
    filters = """    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: grpc-echo-mirror, port: 9090}
""" if mirror else ""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-echo, namespace: server}}
spec:
  parentRefs: [{{name: grpc-gateway}}]
  rules:
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho}}
{filters}    backendRefs:
    - {{name: grpc-echo, port: 9090}}
"""


def _slice(service: str, port: int) -> str:
    doc = yaml.safe_load(endpoint_slice(service, port))
    doc["ports"][0]["name"] = "grpc"
    return yaml.safe_dump(doc)


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[Cluster, int, dict[str, EchoLog], LocalEnvoy]]:
    async with cluster(tmp_path) as c:
        async with AsyncExitStack() as exits:
            await c.install()
            await c.apply(SERVICES)
            logs = {}
            for name in ("grpc-echo", "grpc-echo-mirror"):
                port, logs[name] = await add_grpc_echo(exits, name)
                await c.apply(_slice(name, port))
            await c.apply(GATEWAY)
            local = free_port()
            plane, _, _ = control_plane(c, port_map={GRPC_PORT: local})
            await plane.start()
            exits.push_async_callback(plane.stop)
            envoy = LocalEnvoy(
                node_id="kube-grpc", gateway="server/grpc-gateway", xds_port=int(plane.xds_address.rsplit(":", 1)[1]),
                admin_port=0, log_sink=lambda _: None,
            )  # fmt: skip
            await envoy.start()
            exits.push_async_callback(envoy.stop)
            yield c, local, logs, envoy


async def test_kubectl_apply_grpcroute_mirrors_and_kubectl_get_shows_status(kube: tuple[Cluster, int, dict[str, EchoLog], LocalEnvoy]) -> None:
    c, port, logs, envoy = kube
    await c.apply(grpc_route(mirror=True))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(ECHO, request_serializer=pb.EchoRequest.SerializeToString, response_deserializer=pb.EchoResponse.FromString)

        async def call(tag: str) -> bool:
            try:
                answer = await echo(pb.EchoRequest(), metadata=(("x-trace", tag),), timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return answer.assertions.context.pod.startswith("grpc-echo-")

        def seen(name: str, tag: str) -> bool:
            return any(h.get("metadata", {}).get("x-trace") == tag for h in logs[name].heads())

        async def mirrored() -> bool:
            tag = uuid.uuid4().hex
            return await call(tag) and (await _eventually(lambda: seen("grpc-echo-mirror", tag)))

        await wait_until(mirrored, timeout=30, message="a gRPC call through Envoy, mirrored")

        async def accepted() -> bool:
            route = await c.get("grpcroute", "grpc-echo", "server")
            parents = (route.get("status") or {}).get("parents") or []
            return bool(parents) and all(cond["status"] == "True" for cond in parents[0]["conditions"])

        await wait_until(accepted, timeout=15, message="kubectl get grpcroute shows Accepted and ResolvedRefs")
        route = await c.get("grpcroute", "grpc-echo", "server")
        [parent] = route["status"]["parents"]
        assert parent["controllerName"] == DEFAULT_CONTROLLER
        assert {cond["type"]: cond["observedGeneration"] for cond in parent["conditions"]} == {"Accepted": 1, "ResolvedRefs": 1}
        gw = await c.get("gateway", "grpc-gateway", "server")
        [listener] = gw["status"]["listeners"]
        assert {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"} in listener["supportedKinds"]
        assert listener["attachedRoutes"] == 1

        # kubectl apply without the filter: Envoy stops mirroring, status follows the generation.
        await c.apply(grpc_route(mirror=False))
        await wait_until(lambda: _none(mirror_policies(envoy)), timeout=15, message="Envoy without the gRPC mirror")
        tag = uuid.uuid4().hex
        assert await call(tag)
        assert not seen("grpc-echo-mirror", tag)

        async def observed_2() -> bool:
            route = await c.get("grpcroute", "grpc-echo", "server")
            return all(cond["observedGeneration"] == 2 for cond in route["status"]["parents"][0]["conditions"])

        await wait_until(observed_2, timeout=15, message="observedGeneration 2")


async def _eventually(check: Callable[[], bool]) -> bool:
    """False (not an error) when ``check`` stays false: the caller's wait_until retries with a new call."""
    try:
        await wait_until(check, timeout=5)
    except TimeoutError:
        return False
    return True


async def _none(policies: Awaitable[object]) -> bool:
    return not await policies
