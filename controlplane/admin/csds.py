"""Envoy's Client Status Discovery Service (``envoy.service.status.v3``), so CSDS tools work.

Per connected node, every resource of every type it subscribed to, with the status the
management server sees:

* ``SYNCED``: the Envoy ACKed the version it runs, and it is the current one;
* ``STALE``: sent, neither ACKed nor NACKed yet;
* ``ERROR``: sent and NACKed (the Envoy keeps its previous version); ``error_state`` carries
  Envoy's message and the rejected resource;
* ``NOT_SENT``: the current version has not been sent yet (waiting for clusters to warm, say).

Nodes have no metadata here, so a ``NodeMatcher`` with ``node_metadatas`` matches nothing.
Resources are shown with their private keys redacted (:mod:`.redact`), as the admin API shows them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import TypeAlias

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2
from google.protobuf import any_pb2

from ..xds.cache import Entry, SnapshotCache
from ..xds.resources import PUSH_ORDER
from ..xds.server import ServiceAdder
from ..xds.tracking import NodeRegistry, StreamState, TypeState
from .protoutil import timestamp
from .redact import redacted_bytes

CSDS_SERVICE_NAME = csds_pb2.DESCRIPTOR.services_by_name["ClientStatusDiscoveryService"].full_name

_Generic: TypeAlias = csds_pb2.ClientConfig.GenericXdsConfig


def string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind == "safe_regex":
        flags = re.IGNORECASE if matcher.ignore_case else 0
        return re.fullmatch(matcher.safe_regex.regex, value, flags) is not None
    pattern = getattr(matcher, kind) if kind else ""
    if matcher.ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if kind == "exact":
        return value == pattern
    if kind == "prefix":
        return value.startswith(pattern)
    if kind == "suffix":
        return value.endswith(pattern)
    if kind == "contains":
        return pattern in value
    return False


def node_matches(matcher: node_pb2.NodeMatcher, stream: StreamState) -> bool:
    if matcher.node_metadatas:
        return False
    return not matcher.HasField("node_id") or string_matches(matcher.node_id, stream.node_id)


def _version(entry: Entry | None) -> str | None:
    return entry.version if entry is not None else None


def resource_status(ts: TypeState, current: Entry | None, name: str) -> tuple[int, Entry | None, float | None]:
    """(ConfigStatus, the entry that status is about, when) for one resource of one stream."""
    if ts.sent_entries is None:  # the stream reports per type only: every resource shares its state
        return _type_status(ts, current)
    sent, acked = ts.sent_entries.get(name), (ts.acked_entries or {}).get(name)
    changed = _version(sent) != _version(acked)
    if ts.in_flight and changed:
        return csds_pb2.STALE, sent or acked, ts.sent_at
    if ts.nacked and changed:
        return csds_pb2.ERROR, sent or acked, ts.last_nack.at if ts.last_nack else None
    if current is not None and _version(acked) != current.version:
        return csds_pb2.NOT_SENT, current, None
    if acked is not None:
        return csds_pb2.SYNCED, acked, ts.acked_at
    return csds_pb2.NOT_SENT, current or sent, None


def _type_status(ts: TypeState, current: Entry | None) -> tuple[int, Entry | None, float | None]:
    if ts.in_flight:
        return csds_pb2.STALE, current, ts.sent_at
    if ts.nacked:
        return csds_pb2.ERROR, current, ts.last_nack.at if ts.last_nack else None
    if ts.sent_version is not None and ts.acked_version == ts.sent_version:
        return csds_pb2.SYNCED, current, ts.acked_at
    return csds_pb2.NOT_SENT, current, None


# xds-protos ships no type stubs: the base class is Any to mypy.
class ClientStatusServicer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, cache: SnapshotCache, registry: NodeRegistry) -> None:
        self.cache = cache
        self.registry = registry

    def status(self, request: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        streams = sorted(self.registry.streams(), key=lambda s: (s.node_id, s.stream_id))
        if request.node_matchers:
            streams = [s for s in streams if any(node_matches(m, s) for m in request.node_matchers)]
        elif request.HasField("node") and request.node.id:
            streams = [s for s in streams if s.node_id == request.node.id]
        return csds_pb2.ClientStatusResponse(
            config=[self.client_config(s, with_contents=not request.exclude_resource_contents) for s in streams]
        )

    def client_config(self, stream: StreamState, *, with_contents: bool = True) -> csds_pb2.ClientConfig:
        agent, _, version = stream.user_agent.partition(" ")
        config = csds_pb2.ClientConfig(
            node=base_pb2.Node(id=stream.node_id, cluster=stream.gateway, user_agent_name=agent, user_agent_version=version)
        )
        snapshot = self.cache.get(stream.gateway)
        for type_url in PUSH_ORDER:
            ts = stream.types.get(type_url)
            if ts is None:
                continue
            current: Mapping[str, Entry] = {}
            if snapshot is not None:
                entries = snapshot[type_url].entries
                current = entries if ts.wildcard else {n: entries[n] for n in ts.resource_names if n in entries}
            for name in sorted({*current, *(ts.sent_entries or {}), *(ts.acked_entries or {})}):
                config.generic_xds_configs.append(self._generic(ts, name, current.get(name), with_contents))
        return config

    @staticmethod
    def _generic(ts: TypeState, name: str, current: Entry | None, with_contents: bool) -> _Generic:
        status, entry, at = resource_status(ts, current, name)
        generic = _Generic(
            type_url=ts.type_url,
            name=name,
            version_info=_version(entry) or "",
            last_updated=timestamp(at),
            config_status=status,
        )
        if with_contents and entry is not None:
            generic.xds_config.CopyFrom(any_pb2.Any(type_url=ts.type_url, value=redacted_bytes(ts.type_url, entry.data)))
        if status == csds_pb2.ERROR and ts.last_nack is not None:
            generic.client_status = config_dump_shared_pb2.NACKED
            generic.error_state.CopyFrom(
                config_dump_shared_pb2.UpdateFailureState(
                    last_update_attempt=timestamp(ts.last_nack.at),
                    details=ts.last_nack.message,
                    version_info=ts.last_nack.version,
                )
            )
            if with_contents and entry is not None:
                generic.error_state.failed_configuration.CopyFrom(generic.xds_config)
        elif status == csds_pb2.SYNCED:
            generic.client_status = config_dump_shared_pb2.ACKED
        elif status == csds_pb2.STALE:
            generic.client_status = config_dump_shared_pb2.REQUESTED
        return generic

    async def FetchClientStatus(self, request: csds_pb2.ClientStatusRequest, context: grpc.aio.ServicerContext) -> csds_pb2.ClientStatusResponse:  # noqa: N802 - the gRPC method's name
        return self.status(request)

    async def StreamClientStatus(self, request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[csds_pb2.ClientStatusResponse]:  # noqa: N802 - the gRPC method's name
        async for request in request_iterator:
            yield self.status(request)


def csds_service(servicer: ClientStatusServicer) -> tuple[str, ServiceAdder]:
    """CSDS as ``build_server(services=...)`` takes it."""
    return CSDS_SERVICE_NAME, lambda server: csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(servicer, server)
