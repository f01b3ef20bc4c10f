"""GRPCRoute tests: the five of upstream v1.6.1 (conformance/tests/grpcroute-*.go), replayed with
real gRPC calls through Envoy to the gRPC echo pods (grpc-infra-backend-v1/v2/v3)."""

from __future__ import annotations

from typing import Any

import grpc

from .env import INFRA, SAME_NAMESPACE, Env
from .http import Target
from .rpc import GrpcCase
from .status import ConformanceError
from .suite import conformance_test

GRPC = ["Gateway", "GRPCRoute"]
V1, V2, V3 = "grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3"
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


def ok(method: str = "Echo", backend: str = V1, **kw: Any) -> GrpcCase:
    return GrpcCase(method=method, backend=backend, **kw)


def unimplemented(method: str = "Echo", **kw: Any) -> GrpcCase:
    return GrpcCase(method=method, code=UNIMPLEMENTED, **kw)


def md(**headers: str) -> tuple[tuple[str, str], ...]:
    return tuple(headers.items())


async def _accepted(env: Env, route: str, gw: tuple[str, str] = SAME_NAMESPACE, *listeners: str) -> Target:
    target = await env.gateway_and_routes_accepted(gw, [(INFRA, route)], *listeners, kind="GRPCRoute")
    await env.resolved_refs_true((INFRA, route), gw, kind="GRPCRoute")
    return target


@conformance_test("GRPCExactMethodMatching", "Exact method matching for different backends", GRPC, ["tests/grpcroute-exact-method-matching.yaml"])
async def exact_method_matching(env: Env) -> None:
    target = await _accepted(env, "exact-matching")
    await env.expect(target, ok("Echo"), ok("EchoTwo", V2), unimplemented("EchoThree"))


@conformance_test("GRPCRouteHeaderMatching", "Header matching for different backends", GRPC, ["tests/grpcroute-header-matching.yaml"])
async def header_matching(env: Env) -> None:
    target = await _accepted(env, "grpc-header-matching")
    await env.expect(
        target,
        ok(metadata=md(version="one")),
        ok(backend=V2, metadata=md(version="two")),
        ok(metadata=md(version="two", color="orange")),
        ok(backend=V2, metadata=md(version="two", color="blue")),
        unimplemented(metadata=md(color="orange")),
        unimplemented(metadata=md(**{"some-other-header": "one"})),
        ok(metadata=md(color="blue")),
        ok(metadata=md(color="green")),
        ok(backend=V2, metadata=md(color="red")),
        ok(backend=V2, metadata=md(color="yellow")),
        unimplemented(metadata=md(color="purple")),
    )


@conformance_test(
    "GRPCRouteListenerHostnameMatching",
    "Listener hostnames select the GRPCRoute that serves a call",
    GRPC,
    ["tests/grpcroute-listener-hostname-matching.yaml"],
)
async def listener_hostname_matching(env: Env) -> None:
    gw = (INFRA, "grpcroute-listener-hostname-matching")
    target = await _accepted(env, "backend-v1", gw, "listener-1")
    await env.gateway_and_routes_accepted(gw, [(INFRA, "backend-v2")], "listener-2", kind="GRPCRoute")
    await env.gateway_and_routes_accepted(gw, [(INFRA, "backend-v3")], "listener-3", "listener-4", kind="GRPCRoute")
    await env.expect(
        target,
        ok(authority="bar.com"),
        ok(backend=V2, authority="foo.bar.com"),
        ok(backend=V3, authority="baz.bar.com"),
        ok(backend=V3, authority="boo.bar.com"),
        ok(backend=V3, authority="multiple.prefixes.bar.com"),
        ok(backend=V3, authority="multiple.prefixes.foo.com"),
        unimplemented(authority="foo.com"),
        unimplemented(authority="no.matching.host"),
    )


@conformance_test(
    "GRPCRouteNamedRule",
    "Routing works with name: set on a GRPCRoute rule",
    GRPC + ["GRPCRouteNamedRouteRule"],
    ["tests/grpcroute-named-rule.yaml"],
    provisional=True,
)
async def named_rule(env: Env) -> None:
    target = await _accepted(env, "grpc-named-rules")
    await env.expect(target, ok("Echo"), ok("EchoTwo", V2))


WEIGHT_TOTAL, WEIGHT_TOLERANCE, WEIGHT_ATTEMPTS = 500, 0.05, 5


@conformance_test("GRPCRouteWeight", "Calls are spread over weighted backends", GRPC, ["tests/grpcroute-weight.yaml"])
async def weight(env: Env) -> None:
    target = await _accepted(env, "weighted-backends")
    await env.expect(target, ok(backend="grpc-infra-backend-v"))
    want = {V1: 0.7, V2: 0.3, V3: 0.0}
    why = ""
    for _ in range(WEIGHT_ATTEMPTS):
        counts = await env.grpc_distribution(target, ok(), WEIGHT_TOTAL)
        unexpected = set(counts) - set(want)
        if unexpected:
            why = f"unexpected answers {dict(counts)}"
            continue
        shares = {b: counts.get(b, 0) / WEIGHT_TOTAL for b in want}
        if all(abs(shares[b] - p) <= WEIGHT_TOLERANCE for b, p in want.items()):
            return
        why = f"shares {shares}, want {want} ±{WEIGHT_TOLERANCE}"
    raise ConformanceError(f"{why} in {WEIGHT_ATTEMPTS} attempts")
