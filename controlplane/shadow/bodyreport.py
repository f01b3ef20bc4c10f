"""``mirrorplane.shadow.v1.Bodies``: where Envoy's Lua upstream filter sends response bodies
(controlplane/xds/bodycapture.py); each becomes digests (:mod:`.bodies`) handed to the hub."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from ..identity import Authorizer
from .bodies import Count, Digest, digest_body
from .receiver import ServiceAdder
from .tagging import settings_keys
from .v1 import shadow_pb2, shadow_pb2_grpc

log = logging.getLogger("mirrorplane.shadow")

BODIES_SERVICE_NAME = shadow_pb2.DESCRIPTOR.services_by_name["Bodies"].full_name

Deliver = Callable[[str, str, str, dict[str, Digest]], None]


class BodyReceiver(shadow_pb2_grpc.BodiesServicer):
    """Envoys call it (their Gateway's identity under mutual TLS, as for the access log): it
    checks the caller itself, so it is listed as self-checked for the operator-only interceptor."""

    def __init__(self, deliver: Deliver, count: Count, authorizer: Authorizer) -> None:
        self.deliver, self.count, self.authorizer = deliver, count, authorizer

    async def Report(  # noqa: N802 - the gRPC method's name
        self, request: shadow_pb2.BodyReport, context: grpc.aio.ServicerContext
    ) -> shadow_pb2.BodyReportAck:
        ns, sep, name = request.gateway.partition("/")
        denial = (
            f"gateway must be namespace/name, got {request.gateway!r}"
            if not sep or not ns or not name or "/" in name
            else self.authorizer.stream_denial(context, request.gateway)
        )
        if denial:
            self.count("body_denied", 1)
            log.warning("bodies.denied gateway=%s peer=%s reason=%s", request.gateway or "-", context.peer(), denial)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denial)
        self.count("body_received", 1)
        if not request.request_id or not request.cluster:
            self.count("body_malformed", 1)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id and cluster are required")
        try:
            keys = settings_keys(request.settings)
            digests = {k: digest_body(request.body, request.over_limit, k) for k in keys}
        except (ValueError, TypeError):
            self.count("body_malformed", 1)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "settings: expected [[limit, [paths]], ...]")
        if request.over_limit:
            self.count("body_over_limit", 1)
        self.deliver(request.gateway, request.request_id, request.cluster, digests)
        return shadow_pb2.BodyReportAck()


def bodies_service(receiver: BodyReceiver) -> tuple[str, ServiceAdder]:
    return BODIES_SERVICE_NAME, lambda server: shadow_pb2_grpc.add_BodiesServicer_to_server(receiver, server)
