"""gRPC traffic for the GRPCRoute tests, as upstream's conformance/utils/grpc does it.

Plaintext gRPC (HTTP/2 with prior knowledge) to the Gateway's listener, ``:authority`` set per
case. An answer is checked like upstream's: the status code; when OK, the echo's
``fully_qualified_method``, ``context.namespace``, and ``context.pod`` starting with the
expected backend. "Eventually consistent" is the same three-in-a-row rule as HTTP.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from controlplane.echo.grpcecho import grpcecho_pb2 as pb

from .http import MAX_TIME_TO_CONSISTENCY, REQUEST_TIMEOUT, REQUIRED_CONSECUTIVE_SUCCESSES, RETRY_DELAY, Target
from .status import ConformanceError

SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"


@dataclass(frozen=True)
class GrpcCase:
    method: str = "Echo"
    authority: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    backend: str = ""  # expected pod-name prefix when OK
    namespace: str = "gateway-conformance-infra"
    code: grpc.StatusCode = grpc.StatusCode.OK

    def name(self) -> str:
        extra = f" authority={self.authority}" if self.authority else ""
        extra += f" metadata={dict(self.metadata)}" if self.metadata else ""
        return f"gRPC {self.method}{extra}"


@dataclass(frozen=True)
class GrpcAnswer:
    code: grpc.StatusCode
    response: pb.EchoResponse | None
    details: str = ""


@dataclass
class GrpcClient:
    """One channel per (port, authority): gRPC sets ``:authority`` per channel."""

    channels: dict[tuple[int, str], grpc.aio.Channel] = field(default_factory=dict)

    def _channel(self, target: Target, authority: str) -> grpc.aio.Channel:
        key = (target.local_port, authority)
        if key not in self.channels:
            options = [("grpc.default_authority", authority)] if authority else []
            self.channels[key] = grpc.aio.insecure_channel(f"127.0.0.1:{target.local_port}", options=options)
        return self.channels[key]

    async def call(self, target: Target, case: GrpcCase, extra: tuple[tuple[str, str], ...] = ()) -> GrpcAnswer:
        call = self._channel(target, case.authority).unary_unary(
            f"/{SERVICE}/{case.method}",
            request_serializer=pb.EchoRequest.SerializeToString,
            response_deserializer=pb.EchoResponse.FromString,
        )
        try:
            response = await call(pb.EchoRequest(), metadata=case.metadata + extra, timeout=REQUEST_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return GrpcAnswer(exc.code(), None, exc.details() or "")
        return GrpcAnswer(grpc.StatusCode.OK, response)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        self.channels.clear()


def compare(case: GrpcCase, got: GrpcAnswer) -> str:
    if got.code != case.code:
        return f"status {got.code.name} ({got.details}), want {case.code.name}"
    if got.code != grpc.StatusCode.OK or got.response is None:
        return ""
    a = got.response.assertions
    want_method = f"/{SERVICE}/{case.method}"
    if a.fully_qualified_method != want_method:
        return f"method {a.fully_qualified_method!r}, want {want_method!r}"
    if a.context.namespace != case.namespace:
        return f"namespace {a.context.namespace!r}, want {case.namespace!r}"
    if not a.context.pod.startswith(case.backend):
        return f"pod {a.context.pod!r}, want {case.backend}-*"
    return ""


async def expect_consistent(client: GrpcClient, target: Target, case: GrpcCase) -> None:
    successes, start, why = 0, time.monotonic(), ""
    while True:
        why = compare(case, await client.call(target, case))
        if not why:
            successes += 1
            if successes >= REQUIRED_CONSECUTIVE_SUCCESSES:
                return
            continue
        successes = 0
        if time.monotonic() - start > MAX_TIME_TO_CONSISTENCY:
            raise ConformanceError(
                f"{case.name()}: {why} (no {REQUIRED_CONSECUTIVE_SUCCESSES} consecutive matches in {MAX_TIME_TO_CONSISTENCY:g}s)"
            )
        await asyncio.sleep(RETRY_DELAY)
