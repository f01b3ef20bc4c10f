"""GRPCRoute mirroring end to end: a folder → the control plane → ADS → a real Envoy → real gRPC
echo servers, called with real gRPC clients (HTTP/2 prior knowledge through Envoy's listener).

There is no upstream conformance test for GRPCRoute mirroring; these are ours (issue 13).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from conformance.tests_mirror import DISTRIBUTION_CHECKS, TOTAL_REQUESTS, binomial_band
from controlplane.echo import serve_stalled
from controlplane.echo.common import Echo, make_config
from controlplane.echo.grpcecho import grpcecho_pb2 as pb
from controlplane.echo.rpc import serve_grpc
from controlplane.echo.v1 import streamecho_pb2 as stream_pb
from controlplane.gatewayapi.translator import Options
from controlplane.localenvoy import LocalEnvoy
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.translator import XdsOptions
from e2e import EchoLog, mirror_policies, service_yaml
from support import free_port, wait_until
from test_e2e_mirror import _settled

ECHO = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"
STREAM = "/mirrorplane.echo.v1.StreamEcho/ServerStream"
GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: mirrorplane}
spec: {controllerName: mirrorplane.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grpc-gateway, namespace: server}
spec:
  gatewayClassName: mirrorplane
  listeners:
  - {name: grpc, protocol: HTTP, port: 9000, allowedRoutes: {namespaces: {from: All}}}
"""


def grpc_route(mirror: str | None = "grpc-mirror", *, extra: str = "", namespace: str = "server") -> str:
    """The GRPCRoute under test: every GrpcEcho and StreamEcho call to ``grpc-primary``,
    mirrored (when ``mirror`` is set) to that Service with ``extra`` lines (percent, fraction,
    namespace) in its backendRef's RequestMirror."""
    filters = ""
    if mirror:
        filters = f"""    filters:
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: {mirror}
          port: 8080{extra}
"""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-echo, namespace: {namespace}}}
spec:
  parentRefs:
  - {{name: grpc-gateway, namespace: server}}
  rules:
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho}}
    - method: {{service: mirrorplane.echo.v1.StreamEcho}}
{filters}    backendRefs:
    - name: grpc-primary
      namespace: server
      port: 8080
"""


@dataclass
class GrpcStack:
    dir: Path
    port: int
    envoy: LocalEnvoy
    plane: ControlPlane
    logs: dict[str, EchoLog]
    channel: grpc.aio.Channel
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)

    def write(self, name: str, text: str) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.dir / name)

    def calls(self, name: str, method: str = ECHO) -> list[dict[str, Any]]:
        return [h for h in self.logs[name].heads() if h.get("method") == method]

    async def echo(
        self, payload: bytes = b"", metadata: tuple[tuple[str, str], ...] = (), timeout: float = 10
    ) -> pb.EchoResponse:
        """A unary Echo with the raw request bytes ``payload`` (unknown fields of the empty
        EchoRequest, so the echo logs their exact digest)."""
        call = self.channel.unary_unary(ECHO, request_serializer=None, response_deserializer=pb.EchoResponse.FromString)
        return await call(payload, metadata=metadata, timeout=timeout)


async def add_grpc_echo(exits: AsyncExitStack, name: str, **options: Any) -> tuple[int, EchoLog]:
    log = EchoLog()
    server = await serve_grpc(Echo(make_config(name=name, out=log, **options)), "127.0.0.1", 0)
    exits.callback(server.stop)
    return server.port, log


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[GrpcStack]:
    mirror_options = getattr(request, "param", {}) or {}
    exits = AsyncExitStack()
    folder = tmp_path / "config"
    folder.mkdir()
    logs = {}
    primary_port, logs["grpc-primary"] = await add_grpc_echo(exits, "grpc-primary")
    if mirror_options.get("down"):
        mirror_port = free_port()  # nothing listens there
        logs["grpc-mirror"] = EchoLog()
    elif mirror_options.get("stuck"):
        # Accepts the mirror's HTTP/2 connection and never reads a byte (nor sends SETTINGS).
        stuck = await serve_stalled("127.0.0.1", 0)
        exits.callback(stuck.close)
        mirror_port = stuck.sockets[0].getsockname()[1]
        logs["grpc-mirror"] = EchoLog()
    else:
        mirror_port, logs["grpc-mirror"] = await add_grpc_echo(exits, "grpc-mirror", **mirror_options)
    other_port, logs["other-mirror"] = await add_grpc_echo(exits, "other-mirror")
    (folder / "gateway.yaml").write_text(GATEWAY)
    (folder / "services.yaml").write_text(
        # No appProtocol: behind a GRPCRoute a Service port is taken as h2c.
        service_yaml("grpc-primary", primary_port)
        + service_yaml("grpc-mirror", mirror_port)
        + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n"
        + service_yaml("other-mirror", other_port, namespace="other")
    )
    (folder / "route.yaml").write_text(grpc_route())
    port, xds_port = free_port(), free_port()
    plane = ControlPlane(
        FileProvider(folder),
        xds_host="127.0.0.1",
        xds_port=xds_port,
        options=Options(),
        xds_options=XdsOptions(bind_address="127.0.0.1", port_map={9000: port}),
        http_port=None,
    )
    await plane.start()
    exits.push_async_callback(plane.stop)
    envoy = LocalEnvoy(
        node_id="e2e-grpc", gateway="server/grpc-gateway", xds_port=xds_port, admin_port=0, log_level="warning"
    )
    await envoy.start()
    exits.push_async_callback(envoy.stop)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    exits.push_async_callback(channel.close)
    s = GrpcStack(folder, port, envoy, plane, logs, channel, exits)
    await wait_until(lambda: _answers(s), timeout=20, message="Envoy serving the GRPCRoute")
    try:
        yield s
    finally:
        await exits.aclose()


async def _answers(s: GrpcStack) -> bool:
    try:
        await s.echo(timeout=2)
    except grpc.aio.AioRpcError:
        return False
    return True


def _digest(raw: bytes) -> dict[str, Any]:
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


async def test_unary_call_is_mirrored_with_same_method_metadata_and_bytes(stack: GrpcStack) -> None:
    tag = uuid.uuid4().hex
    payload = b"\x52\x20" + tag.encode()[:32]  # field 10, 32 bytes: unknown to EchoRequest, kept as is
    answer = await stack.echo(payload, metadata=(("x-trace", tag), ("x-user", "ann")))
    assert answer.assertions.fully_qualified_method == ECHO
    assert answer.assertions.context.pod.startswith("grpc-primary")

    def mirrored() -> list[dict[str, Any]]:
        return [c for c in stack.calls("grpc-mirror") if c["metadata"].get("x-trace") == tag]

    await wait_until(lambda: bool(mirrored()), timeout=15, message="the mirror logging the call")
    [primary] = [c for c in stack.calls("grpc-primary") if c["metadata"].get("x-trace") == tag]
    [copy] = mirrored()
    assert copy["message"] == primary["message"] == _digest(payload)
    assert copy["method"] == primary["method"] == ECHO
    assert copy["metadata"]["x-user"] == "ann"
    # The mirror sees the client's :authority, not Envoy's "-shadow" suffix.
    assert copy["metadata"][":authority"] == primary["metadata"][":authority"]


async def test_server_streaming_call_is_mirrored(stack: GrpcStack) -> None:
    tag = uuid.uuid4().hex
    call = stack.channel.unary_stream(
        STREAM,
        request_serializer=stream_pb.StreamRequest.SerializeToString,
        response_deserializer=stream_pb.StreamResponse.FromString,
    )
    request = stream_pb.StreamRequest(message=tag, count=5)
    answers = [r async for r in call(request, metadata=(("x-trace", tag),), timeout=10)]
    assert [(r.index, r.message) for r in answers] == [(i, tag) for i in range(5)]
    assert all(r.pod.startswith("grpc-primary") for r in answers)
    await wait_until(
        lambda: any(c["metadata"].get("x-trace") == tag for c in stack.calls("grpc-mirror", STREAM)),
        timeout=15,
        message="the mirror logging the streaming call",
    )
    [copy] = [c for c in stack.calls("grpc-mirror", STREAM) if c["metadata"].get("x-trace") == tag]
    assert copy["message"] == _digest(request.SerializeToString())


@pytest.mark.parametrize(
    "stack",
    [
        pytest.param({"down": True}, id="down"),
        pytest.param({"stuck": True}, id="stuck"),
        pytest.param({"delay": 2.0}, id="slow-2s"),
        pytest.param({"status": 500}, id="errors"),
    ],
    indirect=True,
)
async def test_client_answer_is_unchanged_whatever_the_mirror_does(stack: GrpcStack) -> None:
    # 256 KiB requests (within the mirror body bound) too: more than a stuck mirror's socket
    # buffers take, so only Envoy's buffers for the copy keep the client going.
    for payload in [b""] * 3 + [b"\x52\x80\x80\x10" + b"x" * (256 * 1024)] * 5:
        tag = uuid.uuid4().hex
        # A deadline below the slow mirror's 2 s: were the client waiting on the mirror, the
        # call would end DEADLINE_EXCEEDED instead of OK.
        answer = await stack.echo(payload, metadata=(("x-trace", tag),), timeout=1.5)
        assert answer.assertions.context.pod.startswith("grpc-primary")
        [call] = [c for c in stack.calls("grpc-primary") if c["metadata"].get("x-trace") == tag]
        assert call["message"] == _digest(payload)


async def _mirror_fraction_is(s: GrpcStack, p: float) -> bool:
    policies = await mirror_policies(s.envoy)
    if not policies:
        return False
    value = policies[0].get("runtime_fraction", {}).get("default_value")
    if value is None:
        return p == 1.0
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[value.get("denominator", "HUNDRED")]
    return value.get("numerator", 0) / scale == p


@pytest.mark.parametrize(
    ("extra", "want"),
    # 1/3 reaches Envoy as 333333/MILLION (xds/translator.py fractional_percent).
    [("\n        percent: 20", 0.2), ("\n        fraction: {numerator: 1, denominator: 3}", 333333 / 1_000_000)],
    ids=["percent-20", "fraction-1-3"],
)
async def test_mirror_share_within_three_sigma(stack: GrpcStack, extra: str, want: float) -> None:
    stack.write("route.yaml", grpc_route(extra=extra))
    await wait_until(lambda: _mirror_fraction_is(stack, want), timeout=15, message="Envoy holding the mirror fraction")
    low, high = binomial_band(want * 100)
    counts = []
    sem = asyncio.Semaphore(10)

    async def one(batch: str, i: int) -> None:
        async with sem:
            await stack.echo(metadata=(("x-batch", batch), ("x-i", str(i))))

    def mirrored(batch: str) -> int:
        return sum(1 for c in stack.calls("grpc-mirror") if c["metadata"].get("x-batch") == batch)

    for _ in range(DISTRIBUTION_CHECKS):
        batch = uuid.uuid4().hex
        await asyncio.gather(*(one(batch, i) for i in range(TOTAL_REQUESTS)))
        counts.append(await _settled(functools.partial(mirrored, batch)))
        if low <= counts[-1] <= high:
            return
    pytest.fail(
        f"mirrored {counts} of {TOTAL_REQUESTS} RPCs in {DISTRIBUTION_CHECKS} batches, expected {low:.1f}..{high:.1f}"
    )


async def test_cross_namespace_mirror_needs_a_reference_grant(stack: GrpcStack) -> None:
    stack.write("route.yaml", grpc_route("other-mirror", extra="\n          namespace: other"))
    key = ("GRPCRoute", "server", "grpc-echo")

    def resolved(reason: str) -> bool:
        body = stack.plane.controller.statuses.get(key) or {}
        return any(
            c["type"] == "ResolvedRefs" and c["reason"] == reason
            for p in body.get("parents", [])
            for c in p["conditions"]
        )

    await wait_until(lambda: resolved("RefNotPermitted"), timeout=15, message="ResolvedRefs=False/RefNotPermitted")
    await wait_until(lambda: _no_mirror(stack), timeout=15, message="Envoy without the ungranted mirror")
    tag = uuid.uuid4().hex
    await stack.echo(metadata=(("x-trace", tag),))  # the primary keeps serving

    stack.write(
        "grant.yaml",
        """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: grpc-mirror, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: server}]
  to: [{group: "", kind: Service}]
""",
    )
    await wait_until(lambda: resolved("ResolvedRefs"), timeout=15, message="ResolvedRefs=True with the grant")

    await wait_until(
        lambda: _mirrors_a_call(stack, "other-mirror"), timeout=30, message="the granted mirror receiving calls"
    )
    # Calls are answered in order and the grant came after: the ungranted call was never copied.
    assert not any(c["metadata"].get("x-trace") == tag for c in stack.calls("other-mirror"))


async def _mirrors_a_call(s: GrpcStack, mirror: str) -> bool:
    """One new call through Envoy, and whether ``mirror`` logs it (within a short wait)."""
    tag = uuid.uuid4().hex
    await s.echo(metadata=(("x-trace", tag),))
    try:
        await wait_until(lambda: any(c["metadata"].get("x-trace") == tag for c in s.calls(mirror)), timeout=1)
    except TimeoutError:
        return False
    return True


async def _no_mirror(s: GrpcStack) -> bool:
    return not await mirror_policies(s.envoy)


async def test_editing_the_file_adds_and_removes_the_mirror_without_restarting_envoy(stack: GrpcStack) -> None:
    pid = stack.envoy.pid
    stack.write("route.yaml", grpc_route(None))
    await wait_until(lambda: _no_mirror(stack), timeout=15, message="Envoy without the mirror")
    tag = uuid.uuid4().hex
    await stack.echo(metadata=(("x-trace", tag),))

    stack.write("route.yaml", grpc_route())
    await wait_until(
        lambda: _mirrors_a_call(stack, "grpc-mirror"), timeout=30, message="the mirror receiving calls again"
    )
    # The sentinel reached the mirror after the unmirrored call was answered: that one never did.
    assert not any(c["metadata"].get("x-trace") == tag for c in stack.calls("grpc-mirror"))
    assert stack.envoy.pid == pid, "Envoy must not be restarted"


async def test_unmatched_call_gets_unimplemented(stack: GrpcStack) -> None:
    call = stack.channel.unary_unary("/no.Such/Method", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


POLICY = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: grpc-shadow, namespace: server}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: GRPCRoute, name: grpc-echo}]
  requestHeaderModifier:
    set: [{name: x-shadow, value: "true"}]
    remove: [authorization]
  hostname: grpc-next.internal
"""


async def test_mirror_policy_shapes_only_the_mirror_leg_and_its_removal_restores_defaults(stack: GrpcStack) -> None:
    """MirrorPolicy on a GRPCRoute (issue 14): metadata set and removed on the mirror leg only, the
    mirror's :authority from `hostname`; deleting the policy restores the defaults, same Envoy."""
    pid = stack.envoy.pid
    stack.write("policy.yaml", POLICY)

    async def call(tag: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        await stack.echo(metadata=(("x-trace", tag), ("authorization", "Bearer secret")))

        def one(name: str) -> dict[str, Any] | None:
            got = [c for c in stack.calls(name) if c["metadata"].get("x-trace") == tag]
            return got[0] if got else None

        try:
            await wait_until(lambda: one("grpc-mirror") is not None, timeout=10, message="the mirror logging the call")
        except TimeoutError:
            return None
        primary, copy = one("grpc-primary"), one("grpc-mirror")
        assert primary is not None and copy is not None
        return primary, copy

    async def with_policy() -> bool:
        got = await call(uuid.uuid4().hex)
        return got is not None and got[1]["metadata"].get("x-shadow") == "true"

    await wait_until(with_policy, timeout=30, message="the mirror leg carrying the policy's header")
    got = await call(uuid.uuid4().hex)
    assert got is not None
    primary, copy = got
    assert copy["metadata"]["x-shadow"] == "true" and "x-shadow" not in primary["metadata"]
    assert "authorization" not in copy["metadata"] and primary["metadata"]["authorization"] == "Bearer secret"
    assert copy["metadata"][":authority"] == "grpc-next.internal"
    assert primary["metadata"][":authority"] != "grpc-next.internal"

    (stack.dir / "policy.yaml").unlink()

    async def defaults_back() -> bool:
        back = await call(uuid.uuid4().hex)
        return back is not None and "x-shadow" not in back[1]["metadata"]

    await wait_until(defaults_back, timeout=30, message="the mirror leg without the policy")
    back = await call(uuid.uuid4().hex)
    assert back is not None
    primary, copy = back
    assert copy["metadata"]["authorization"] == "Bearer secret"
    assert copy["metadata"][":authority"] == primary["metadata"][":authority"]
    assert stack.envoy.pid == pid, "Envoy must not be restarted"


async def test_envoy_counts_a_request_that_is_not_mirrored_and_not_a_grpc_call(stack: GrpcStack) -> None:
    """A gRPC call is mirrored whatever its size is announced as; a request that is neither gRPC
    nor of a known size within the bound is not, and Envoy counts it by route (docs/grpc.md)."""
    name = "mirrorplane.not_mirrored.route.grpcroute/server/grpc-echo/rule/0/match/0/not-mirrored"
    await stack.echo(b"")

    async def chunked() -> AsyncIterator[bytes]:  # HTTP/1.1, no Content-Length, not gRPC
        yield b"not a grpc call"

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{stack.port}{ECHO}", data=chunked(), headers={"content-type": "text/plain"}
        ) as resp:
            await resp.read()

    async def counted() -> bool:
        return await stack.envoy.stat(name) == 1

    await wait_until(counted, message=f"{name} at 1")
    await stack.echo(b"")  # a second gRPC call, after which the count is still 1
    assert await stack.envoy.stat(name) == 1
