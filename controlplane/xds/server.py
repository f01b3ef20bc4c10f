"""The gRPC server of the xDS port: ADS, health, reflection, and the services added to it.

The servicer composes the two ADS flavours (go-control-plane's ``pkg/server/v3``): every
``StreamAggregatedResources`` call is a :class:`.sotw.SotwStream`, every
``DeltaAggregatedResources`` call a :class:`.delta.DeltaStream`; both follow the rules of
:mod:`.stream` and never import each other.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable

import grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc, discovery_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import BindError
from ..identity import Authorizer, OperatorOnly
from .cache import SnapshotCache
from .delta import DeltaStream
from .sotw import SotwStream
from .stream import CONTROL_PLANE_ID, StreamDeps
from .tracking import NodeRegistry

ADS_SERVICE_NAME = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name


# xds-protos ships no types, so its generated servicer base is Any to mypy.
class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """ADS: State of the World (:mod:`.sotw`) and Delta (:mod:`.delta`) streams, one per call."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: NodeRegistry,
        *,
        control_plane_id: str | None = CONTROL_PLANE_ID,
        authorizer: Authorizer = Authorizer(enforced=False),
    ) -> None:
        self.deps = StreamDeps(cache, registry, authorizer, control_plane_id, secrets.token_hex(4))

    async def StreamAggregatedResources(  # noqa: N802 - the gRPC method's name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await SotwStream(self.deps, context).run()

    async def DeltaAggregatedResources(  # noqa: N802 - the gRPC method's name
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await DeltaStream(self.deps, context).run()


ServiceAdder = Callable[[grpc.aio.Server], object]
"""Registers one more servicer on a server, e.g. ``lambda s: add_FooServicer_to_server(x, s)``."""


def build_server(
    cache: SnapshotCache,
    registry: NodeRegistry,
    *,
    address: str = "127.0.0.1:18000",
    control_plane_id: str | None = CONTROL_PLANE_ID,
    credentials: grpc.ServerCredentials | None = None,
    authorizer: Authorizer = Authorizer(enforced=False),
    services: Iterable[tuple[str, ServiceAdder]] = (),
    self_checked: Iterable[str] = (),
    health_servicer: health.aio.HealthServicer | None = None,
) -> grpc.aio.Server:
    """A gRPC server with ADS, health (overall SERVING, unless ``health_servicer`` is the
    caller's, who then sets it) and reflection; not started.

    ``services`` are more services on the same port, as (full service name, adder) pairs: the
    adder registers the servicer and reflection lists the name (the admin API and CSDS).
    ``self_checked`` names those among them that check the caller's identity themselves (the
    access log receiver: Envoys, not the operator, call it).

    Create it inside the running event loop. ``SO_REUSEPORT`` is off, so binding a port that is in
    use fails instead of silently sharing it with another process. With ``credentials`` the port
    speaks TLS (mutual TLS when they require client certificates) and nothing else. An enforcing
    ``authorizer`` (mutual TLS) limits each ADS stream to its certificate's Gateway and every
    service but ADS, health and reflection to the operator identity (:mod:`controlplane.identity`).
    """
    server = grpc.aio.server(
        interceptors=[OperatorOnly(self_checked=[ADS_SERVICE_NAME, *self_checked])] if authorizer.enforced else [],
        options=[
            ("grpc.so_reuseport", 0),
            # Find dead Envoys (half-open TCP) instead of keeping their streams forever.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        AggregatedDiscoveryServicer(cache, registry, control_plane_id=control_plane_id, authorizer=authorizer), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer or health.aio.HealthServicer(), server)
    names = [ADS_SERVICE_NAME, health.SERVICE_NAME]
    for name, add in services:
        add(server)
        names.append(name)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
    try:
        if credentials is not None:
            server.add_secure_port(address, credentials)
        else:
            server.add_insecure_port(address)
    except RuntimeError as exc:  # how grpc says the bind failed
        raise BindError(f"cannot listen on {address} (xDS): the port is in use, or the address is not here") from exc
    return server
