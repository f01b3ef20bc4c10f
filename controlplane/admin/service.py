"""The admin API, ``mirrorplane.admin.v1.Admin`` (protos/controlplane/admin/v1/admin.proto).

It reads what the serving side already keeps: the :class:`NodeRegistry` (what every Envoy was
sent, ACKed and NACKed), the :class:`SnapshotCache` (what each Gateway serves, as the exact
bytes sent) and the controller's stamped statuses. It never changes any of them, so an operator
poking at it with grpcurl cannot disturb the Envoys. Private keys in the config it shows are
redacted (:mod:`.redact`); with mutual TLS only the operator identity may call it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from ..gatewayapi.status import StatusKey
from ..xds.cache import Entry, SnapshotCache
from ..xds.jsonview import resource_to_json
from ..xds.resources import PUSH_ORDER, SHORT_NAMES
from ..xds.server import ServiceAdder
from ..xds.tracking import Event, EventKind, NodeRegistry, StreamState, TypeState
from .csds import ClientStatusServicer, csds_service
from .protoutil import duration, struct, timestamp
from .redact import redact
from .v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger("mirrorplane.admin")

ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
WATCH_BUFFER = 1024
"""Events a WatchNodes client may lag behind before its stream is ended (RESOURCE_EXHAUSTED)."""

_TYPE_BY_NAME = {**{short: url for url, short in SHORT_NAMES.items()}, **{url: url for url in PUSH_ORDER}}
_EVENT_KINDS = {
    EventKind.CONNECT: admin_pb2.NodeEvent.CONNECT,
    EventKind.DISCONNECT: admin_pb2.NodeEvent.DISCONNECT,
    EventKind.SEND: admin_pb2.NodeEvent.SEND,
    EventKind.ACK: admin_pb2.NodeEvent.ACK,
    EventKind.NACK: admin_pb2.NodeEvent.NACK,
}

Statuses = Callable[[], Mapping[StatusKey, dict[str, Any]]]


def type_message(ts: TypeState) -> admin_pb2.TypeState:
    nack = ts.last_nack
    return admin_pb2.TypeState(
        type=ts.short_name,
        type_url=ts.type_url,
        wildcard=ts.wildcard,
        resource_names=sorted(ts.resource_names),
        sent_version=ts.sent_version or "",
        sent_nonce=ts.sent_nonce or "",
        sent_at=timestamp(ts.sent_at),
        sent_resources=ts.sent_resources,
        in_flight=ts.in_flight,
        acked_version=ts.acked_version or "",
        acked_at=timestamp(ts.acked_at),
        ack_latency=duration(ts.last_ack_latency),
        last_nack=None
        if nack is None
        else admin_pb2.Nack(
            version=nack.version,
            nonce=nack.nonce,
            at=timestamp(nack.at),
            error_detail=nack.message,
            code=nack.code,
            kept_version=nack.kept_version,
        ),
        nacked=ts.nacked,
        responses=ts.responses,
        acks=ts.acks,
        nacks=ts.nacks,
    )


def node_message(stream: StreamState) -> admin_pb2.Node:
    order = {t: i for i, t in enumerate(PUSH_ORDER)}
    return admin_pb2.Node(
        node_id=stream.node_id,
        gateway=stream.gateway,
        address=stream.peer,
        user_agent=stream.user_agent,
        connected_since=timestamp(stream.connected_at),
        stream_id=stream.stream_id,
        snapshot_version=stream.snapshot_version or "",
        held_clusters=sorted(stream.held_clusters),
        types=[
            type_message(ts)
            for ts in sorted(stream.types.values(), key=lambda t: order.get(t.type_url, len(order)))
        ],
    )


def event_message(event: Event) -> admin_pb2.NodeEvent:
    return admin_pb2.NodeEvent(
        kind=_EVENT_KINDS[event.kind],
        at=timestamp(event.at),
        type=SHORT_NAMES.get(event.type_url, event.type_url) if event.type_url else "",
        version=event.version or "",
        nonce=event.nonce or "",
        latency=duration(event.latency),
        error_detail=event.message or "",
        node=node_message(event.stream),
    )


def decode(type_url: str, entry: Entry) -> Message:
    """The resource as sent, secrets redacted: parsed back from the snapshot's bytes, not
    rebuilt from the IR."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url.rsplit("/", 1)[1])
    message = message_factory.GetMessageClass(descriptor).FromString(entry.data)
    redact(message)
    return message


def _selected(stream: StreamState, gateway: str, node_id: str) -> bool:
    return (not gateway or stream.gateway == gateway) and (not node_id or stream.node_id == node_id)


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, cache: SnapshotCache, registry: NodeRegistry, statuses: Statuses) -> None:
        self.cache = cache
        self.registry = registry
        self.statuses = statuses

    async def ListNodes(self, request: admin_pb2.ListNodesRequest, context: grpc.aio.ServicerContext) -> admin_pb2.ListNodesResponse:  # noqa: N802 - the gRPC method's name
        streams = sorted(
            (s for s in self.registry.streams() if _selected(s, request.gateway, request.node_id)),
            key=lambda s: (s.gateway, s.node_id, s.stream_id),
        )
        return admin_pb2.ListNodesResponse(nodes=[node_message(s) for s in streams])

    async def GetSnapshot(self, request: admin_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext) -> admin_pb2.GetSnapshotResponse:  # noqa: N802 - the gRPC method's name
        gateway = request.gateway
        if request.node_id:
            streams = self.registry.by_node(request.node_id)
            if not streams:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.node_id!r} is not connected")
            gateway = streams[-1].gateway
        if not gateway:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "set gateway (NAMESPACE/NAME) or node_id")
        unknown = [t for t in request.types if t not in _TYPE_BY_NAME]
        if unknown:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown type {unknown[0]!r}: use {', '.join(SHORT_NAMES.values())} or a type URL",
            )
        snapshot = self.cache.get(gateway)
        if snapshot is None:
            known = ", ".join(self.cache.gateways()) or "none"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no snapshot for Gateway {gateway!r} (served: {known})")
            raise AssertionError("unreachable: abort() raises")  # grpc is untyped: mypy cannot know it
        types = {_TYPE_BY_NAME[t] for t in request.types} or set(PUSH_ORDER)
        names = set(request.names)
        sets = []
        for type_url in PUSH_ORDER:
            if type_url not in types:
                continue
            tsnap = snapshot[type_url]
            sets.append(
                admin_pb2.ResourceSet(
                    type=tsnap.short_name,
                    type_url=type_url,
                    version=tsnap.version,
                    resources=[
                        admin_pb2.Resource(
                            name=name,
                            version=entry.version,
                            resource=struct(resource_to_json(decode(type_url, entry))),
                        )
                        for name, entry in tsnap.entries.items()
                        if not names or name in names
                    ],
                )
            )
        return admin_pb2.GetSnapshotResponse(gateway=gateway, version=snapshot.version, types=sets)

    async def GetStatus(self, request: admin_pb2.GetStatusRequest, context: grpc.aio.ServicerContext) -> admin_pb2.GetStatusResponse:  # noqa: N802 - the gRPC method's name
        objects = [
            admin_pb2.ObjectStatus(kind=kind, namespace=ns, name=name, status=struct(body))
            for (kind, ns, name), body in sorted(self.statuses().items())
            if (not request.kind or request.kind == kind)
            and (not request.namespace or request.namespace == ns)
            and (not request.name or request.name == name)
        ]
        return admin_pb2.GetStatusResponse(objects=objects)

    async def WatchNodes(self, request: admin_pb2.WatchNodesRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[admin_pb2.NodeEvent]:  # noqa: N802 - the gRPC method's name
        queue: asyncio.Queue[admin_pb2.NodeEvent] = asyncio.Queue(WATCH_BUFFER)
        overflowed = False

        def on_event(event: Event) -> None:
            nonlocal overflowed
            if event.kind not in _EVENT_KINDS or not _selected(event.stream, request.gateway, request.node_id):
                return
            try:
                queue.put_nowait(event_message(event))  # converted now: the state moves on
            except asyncio.QueueFull:
                overflowed = True

        remove = self.registry.add_observer(on_event)
        log.info("admin.watch_started peer=%s gateway=%s node=%s", context.peer(), request.gateway or "*", request.node_id or "*")
        try:
            for stream in self.registry.streams():
                if _selected(stream, request.gateway, request.node_id):
                    yield admin_pb2.NodeEvent(
                        kind=admin_pb2.NodeEvent.CURRENT,
                        at=timestamp(stream.connected_at),
                        node=node_message(stream),
                    )
            while True:
                event = await queue.get()
                if overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"watcher fell {WATCH_BUFFER} events behind; watch again",
                    )
                yield event
        finally:
            remove()
            log.info("admin.watch_ended peer=%s", context.peer())


def admin_services(cache: SnapshotCache, registry: NodeRegistry, statuses: Statuses) -> list[tuple[str, ServiceAdder]]:
    """The admin API and Envoy's CSDS, as ``build_server(services=...)`` takes them."""
    admin = AdminServicer(cache, registry, statuses)
    csds = ClientStatusServicer(cache, registry)
    return [
        (ADMIN_SERVICE_NAME, lambda server: admin_pb2_grpc.add_AdminServicer_to_server(admin, server)),
        csds_service(csds),
    ]
