"""The access log receiver: Envoy's gRPC ALS stream (envoy.service.accesslog.v3.AccessLogService).

Each stream names its Envoy once, in its first message; the entries are attributed to that
Envoy's Gateway. With mutual TLS the stream must come from that Gateway's identity (as an ADS
stream must): a Gateway's Envoys cannot write another Gateway's comparisons. The service checks
this itself, so it is listed as self-checked for the operator-only interceptor.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from ..identity import Authorizer
from .hub import Comparisons

log = logging.getLogger("mirrorplane.shadow")

ServiceAdder = Callable[[grpc.aio.Server], object]
"""As xds.server.build_server(services=...) takes it (not imported: this package stands alone)."""
ALS_SERVICE_NAME = als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name


# xds-protos ships no type stubs: the base class is Any to mypy.
class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, comparisons: Comparisons, authorizer: Authorizer) -> None:
        self.comparisons = comparisons
        self.authorizer = authorizer
        self.streams = 0

    async def StreamAccessLogs(  # noqa: N802 (gRPC's name)
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        gateway = ""
        self.streams += 1
        try:
            async for msg in request_iterator:
                if not gateway:
                    gateway = msg.identifier.node.cluster
                    denial = self._denial(context, gateway)
                    if denial:
                        log.warning(
                            "als.denied gateway=%s node=%s peer=%s reason=%s",
                            gateway or "-",
                            msg.identifier.node.id,
                            context.peer(),
                            denial,
                        )
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, denial)
                    log.info(
                        "als.connected gateway=%s node=%s peer=%s", gateway, msg.identifier.node.id, context.peer()
                    )
                add = self.comparisons.add_entry
                for entry in msg.http_logs.log_entry:
                    add(gateway, entry)
        finally:
            self.streams -= 1
            if gateway:
                log.info("als.disconnected gateway=%s peer=%s", gateway, context.peer())
        return als_pb2.StreamAccessLogsResponse()

    def _denial(self, context: grpc.aio.ServicerContext, gateway: str) -> str | None:
        ns, sep, name = gateway.partition("/")
        if not sep or not ns or not name or "/" in name:
            return f"node.cluster must be the Gateway as namespace/name, got {gateway!r}"
        return self.authorizer.stream_denial(context, gateway)


def als_service(receiver: AccessLogReceiver) -> tuple[str, ServiceAdder]:
    return ALS_SERVICE_NAME, lambda server: als_pb2_grpc.add_AccessLogServiceServicer_to_server(receiver, server)
